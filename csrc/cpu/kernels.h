// The kernel templates each per-ISA copy defines; table.cpp instantiates them per dtype.
#pragma once
#include "pynorm/cross_entropy.h"
#include "pynorm/dyt.h"
#include "pynorm/linear_attention.h"
#include "pynorm/matmul.h"
#include "pynorm/merged_attention.h"
#include "pynorm/norm.h"
#include "pynorm/softmax_attention.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

template <class T> void norm_forward(const NormForwardArgs&);
template <class T> void norm_backward(const NormBackwardArgs&);
template <class T> void dyt_forward(const DytForwardArgs&);
template <class T> void dyt_backward(const DytBackwardArgs&);
template <class T> void linear_attention_forward(const LinearAttentionForwardArgs&);
template <class T> void linear_attention_backward(const LinearAttentionBackwardArgs&);
template <class T> void matmul(const MatmulArgs&);
template <class T> void matmul_tn(const MatmulTnArgs&);
template <class T> void merged_attention_forward(const MergedAttentionArgs&);
template <class T> void merged_attention_backward(const MergedAttentionBackwardArgs&);
template <class T> void softmax_attention_forward(const SoftmaxAttentionForwardArgs&);
template <class T> void softmax_attention_backward(const SoftmaxAttentionBackwardArgs&);
template <class T> void cross_entropy_forward(const CrossEntropyForwardArgs&);
template <class T> void cross_entropy_backward(const CrossEntropyBackwardArgs&);

}  // namespace PYNORM_ISA
}  // namespace pynorm
