// Runtime dispatch: one KernelTable per instruction set compiled into the module.
#pragma once
#include <string>
#include <vector>

#include "pynorm/common.h"
#include "pynorm/cross_entropy.h"
#include "pynorm/dyt.h"
#include "pynorm/linear_attention.h"
#include "pynorm/matmul.h"
#include "pynorm/merged_attention.h"
#include "pynorm/norm.h"
#include "pynorm/softmax_attention.h"

namespace pynorm {

// Every CPU kernel, X(name, argument struct): the table's fields below, each instruction
// set's declarations (cpu/kernels.h) and table (cpu/table.cpp) and the bindings' launch
// overloads (python/arrays.h) are all made from this one list.
#define PYNORM_CPU_KERNELS(X) \
  X(norm_forward, NormForwardArgs) \
  X(norm_backward, NormBackwardArgs) \
  X(dyt_forward, DytForwardArgs) \
  X(dyt_backward, DytBackwardArgs) \
  X(linear_attention_forward, LinearAttentionForwardArgs) \
  X(linear_attention_backward, LinearAttentionBackwardArgs) \
  X(matmul, MatmulArgs) \
  X(matmul_tn, MatmulTnArgs) \
  X(merged_attention_forward, MergedAttentionArgs) \
  X(merged_attention_backward, MergedAttentionBackwardArgs) \
  X(softmax_attention_forward, SoftmaxAttentionForwardArgs) \
  X(softmax_attention_backward, SoftmaxAttentionBackwardArgs) \
  X(cross_entropy_forward, CrossEntropyForwardArgs) \
  X(cross_entropy_backward, CrossEntropyBackwardArgs)

struct KernelTable {
  const char* name;
#define PYNORM_TABLE_FIELD(op, Args) void (*op[kNumDTypes])(const Args&);
  PYNORM_CPU_KERNELS(PYNORM_TABLE_FIELD)
#undef PYNORM_TABLE_FIELD
};

// The table in use (the best the CPU supports, unless set_simd_level chose a lower one).
const KernelTable& kernels();
std::string simd_level();
std::vector<std::string> compiled_simd_levels();   // every level built into the module
std::vector<std::string> supported_simd_levels();  // those this CPU can run
// Selects a level by name; throws std::invalid_argument if unknown or unsupported here.
void set_simd_level(const std::string& name);

// Threads: 0 means "OpenMP's default" (omp_get_max_threads, which threadpoolctl controls).
// In a process forked from one that had loaded pynorm every kernel runs on one thread
// (OpenMP's pool does not survive fork; see dispatch.cpp), and get_num_threads says 1.
void set_num_threads(int n);
int get_num_threads();
// Whether this process was forked from one that had loaded pynorm (then it runs serially).
bool forked_child();
// The number of threads to use for a kernel touching `bytes` bytes, given a per-call request
// (<= 0: the global setting), read once: the caller keeps it for the whole call. Small
// problems, and every call in a forked child, stay single-threaded.
int threads_for(int64_t bytes, int requested);

}  // namespace pynorm
