#!/usr/bin/env bash
# Cycles per 16 elements of the CPU norm and DyT kernels (csrc/cpu/norm.cpp, dyt.cpp) at several git revisions,
# built into one binary and timed in turns (see main.cpp), for A/B comparisons that a noisy
# neighbour cannot skew: compare rows of one run, never runs.
#   benchmarks/cycles/ab.sh HEAD~1 HEAD      # v0 = HEAD~1, v1 = HEAD
#   benchmarks/cycles/ab.sh WORKTREE HEAD    # WORKTREE = the uncommitted files
#   benchmarks/cycles/ab.sh HEAD /tmp/try    # a directory: a checkout's csrc/cpu files
# Needs g++ with OpenMP; uses AVX-512 when the CPU has it, else AVX2; AB_ISA=avx512|avx2|baseline
# picks one (AVX2 on an AVX-512 machine, say).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
isa=${AB_ISA:-$(grep -q avx512f /proc/cpuinfo && echo avx512 || echo avx2)}
case $isa in
  avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c" ;;
  avx2) flags="-mavx2 -mfma -mf16c" ;;
  baseline) flags="" ;;
  *) echo "AB_ISA must be avx512, avx2 or baseline, got $isa" >&2; exit 2 ;;
esac
echo "ISA: $isa"
flags="-w -O3 -ffp-contract=off -fopenmp $flags"
objects=() revisions=""
i=0
for rev in "$@"; do
  dir="$work/v$i"
  mkdir -p "$dir"
  for f in norm.cpp dyt.cpp simd.h kernels.h; do
    if [ "$rev" = WORKTREE ]; then cp "$root/csrc/cpu/$f" "$dir/$f"
    elif [ -d "$rev" ]; then cp "$rev/csrc/cpu/$f" "$dir/$f"
    else git -C "$root" show "$rev:csrc/cpu/$f" > "$dir/$f"; fi
  done
  # float32 only: drop the other types' instantiations
  sed -i '/template void \(norm\|dyt\)_.*<\(double\|Half\|BFloat16\)>/d' "$dir/norm.cpp" "$dir/dyt.cpp"
  for k in norm dyt; do
    g++ $flags -DPYNORM_ISA=v$i -I"$dir" -I"$root/csrc/include" -c "$dir/$k.cpp" -o "$dir/$k.o" &
    objects+=("$dir/$k.o")
  done
  revisions="$revisions V($i)"
  echo "v$i = $rev"
  i=$((i + 1))
done
wait
g++ $flags -DREVISIONS="$revisions" -I"$root/csrc/include" "$root/benchmarks/cycles/main.cpp" "${objects[@]}" -o "$work/ab"
"$work/ab"
