// Picks the kernel table for this CPU (compiled once, with baseline flags), and holds the
// thread-count setting.
#include "pynorm/dispatch.h"

#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <stdexcept>

namespace pynorm {

#define PYNORM_DECLARE_TABLE(level) \
  namespace level {                 \
  const KernelTable& kernel_table(); \
  }
#ifdef PYNORM_HAVE_baseline
PYNORM_DECLARE_TABLE(baseline)
#endif
#ifdef PYNORM_HAVE_avx2
PYNORM_DECLARE_TABLE(avx2)
#endif
#ifdef PYNORM_HAVE_avx512
PYNORM_DECLARE_TABLE(avx512)
#endif

namespace {

struct Level {
  const char* name;
  const KernelTable& (*table)();
  bool (*supported)();
};

// Lowest first.
const Level kLevels[] = {
    {"baseline", &baseline::kernel_table, [] { return true; }},
#ifdef PYNORM_HAVE_avx2
    {"avx2", &avx2::kernel_table,
     [] {
       return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
     }},
#endif
#ifdef PYNORM_HAVE_avx512
    {"avx512", &avx512::kernel_table,
     [] {
       return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
              __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
     }},
#endif
};

const KernelTable* best_table() {
  const KernelTable* best = &kLevels[0].table();
  for (const Level& level : kLevels)
    if (level.supported()) best = &level.table();
  return best;
}

std::atomic<const KernelTable*> g_table{nullptr};
std::atomic<int> g_threads{0};

// Fork safety. GNU libgomp's thread pool does not survive fork: the child holds only the
// forking thread, yet libgomp's state still describes the parent's pool (its idle threads,
// maybe a lock another thread held), and the child's first parallel region with more than one
// thread waits forever. Which pools were started before the fork is not knowable (another
// library may share this libgomp), so a child forked from a process that had loaded pynorm
// runs every kernel on its calling thread: threads_for gives 1, and parallel_for's one-thread
// path calls the kernel directly, opening no OpenMP region. Results do not depend on the
// thread count, so the child's bits are the parent's. The flag is inherited by the child's own
// children, whose libgomp state is the same. A process started afresh (spawn, forkserver's
// server) loads pynorm anew and keeps its threads.
std::atomic<bool> g_forked{false};
void on_fork_child() { g_forked.store(true, std::memory_order_relaxed); }  // async-signal-safe
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &on_fork_child);

}  // namespace

const KernelTable& kernels() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    t = best_table();
    g_table.store(t, std::memory_order_release);
  }
  return *t;
}

std::string simd_level() { return kernels().name; }

std::vector<std::string> compiled_simd_levels() {
  std::vector<std::string> names;
  for (const Level& level : kLevels) names.push_back(level.name);
  return names;
}

std::vector<std::string> supported_simd_levels() {
  std::vector<std::string> names;
  for (const Level& level : kLevels)
    if (level.supported()) names.push_back(level.name);
  return names;
}

void set_simd_level(const std::string& name) {
  for (const Level& level : kLevels) {
    if (name != level.name) continue;
    if (!level.supported()) throw std::invalid_argument("SIMD level '" + name + "' is not supported by this CPU");
    g_table.store(&level.table(), std::memory_order_release);
    return;
  }
  std::string known;
  for (const Level& level : kLevels) known += std::string(known.empty() ? "" : ", ") + level.name;
  throw std::invalid_argument("unknown SIMD level '" + name + "' (this build has: " + known + ")");
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }

int get_num_threads() {
  if (forked_child()) return 1;
  const int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

bool forked_child() { return g_forked.load(std::memory_order_relaxed); }

int threads_for(int64_t bytes, int requested) {
  if (forked_child()) return 1;
  const int n = requested > 0 ? requested : get_num_threads();
  // Below ~128 KiB per thread the cost of waking threads outweighs the work.
  const int64_t useful = bytes / (int64_t(128) << 10);
  if (useful < 2) return 1;
  return useful < n ? int(useful) : n;
}

}  // namespace pynorm
