// Tree ensembles from XGBoost JSON models (Booster.save_model("model.json")), compiled
// into flat per-tree node arrays for evaluation in the worker pass: binary:logistic,
// multi:softprob / multi:softmax, reg:squarederror / reg:logistic, numeric splits, missing
// values (NaN) with each node's default direction. No allocation per prediction.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <nlohmann/json_fwd.hpp>
#include <vector>

namespace ls {

struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TreeModel {
 public:
  // Throws ModelError naming the file and the JSON path of what is wrong.
  static TreeModel load_file(const std::string& path);
  static TreeModel load_string(const std::string& json, const std::string& name = "model");

  uint32_t num_features() const { return num_features_; }
  // 1 for binary, regression and multi:softmax (the class index); classes for softprob
  uint32_t num_outputs() const { return link_ == Link::ARGMAX ? 1 : num_class_; }
  size_t num_trees() const { return trees_.size(); }
  size_t nodes() const { return nodes_.size(); }
  const std::vector<std::string>& feature_names() const { return feature_names_; }
  const std::string& objective() const { return objective_; }

  // One vector of num_features() floats (NaN = missing) → num_outputs() values:
  // probabilities for classifiers (softmax over classes), the prediction for regression.
  void predict(const float* x, float* out) const;
  // n vectors, row-major (stride = num_features()) → n × num_outputs() values; trees
  // outermost so each tree's nodes stay in cache across the batch. `margin` is scratch of
  // margin_floats(n) floats.
  void predict_batch(const float* x, size_t n, float* out, float* margin) const;
  size_t margin_floats(size_t n) const {
    return n * num_class_ + std::max((n + 15) / 16 * 32 * size_t(num_features_), 2 * trees_.size() + 2);
  }
  // Which batch kernel predict_batch uses, fastest first: "avx512bins" (64 vectors in
  // lockstep, each feature as an 8-bit bin index among the model's thresholds on it; on
  // CPUs with AVX-512BW), "avx512" (16 vectors in lockstep through each tree laid out level
  // by level), "avx2bins" (the bins, 32 vectors at a time), "avx2" (the level walk, 8 lanes
  // at a time) or "scalar" (no SIMD on this CPU, or a tree deeper than kMaxSimdDepth). The
  // bins kernels take trees of depth <= kMaxBinDepth with at most 255 distinct thresholds
  // per feature (XGBoost's hist method with max_bin <= 256 makes no more). The best the
  // CPU and the model allow is chosen at load; LINESIGHT_BATCH_ENGINE=NAME caps it. "quickscorer"
  // (Lucchese et al., SIGIR 2015: per feature, the nodes it fails clear leaves from
  // their tree's 64-bit leaf mask) is measured beside them (docs/detect.md) and used only
  // when asked (set_batch_engine, LINESIGHT_BATCH_ENGINE=quickscorer), for models whose
  // trees have at most 64 leaves (others keep the best kernel). All give bit-identical
  // results (same additions, same order).
  const char* batch_engine() const;
  // Selects a kernel by name (tests, benchmarks); false, and no change, when this CPU or
  // this model cannot run it.
  bool set_batch_engine(const std::string& name);
  static constexpr uint32_t kMaxSimdDepth = 10;
  static constexpr uint32_t kMaxBinDepth = 8;  // pos fits a byte; level 7: 128 rows
  // How often each feature was split on along this vector's paths (counts has
  // num_features() entries, added to): the evidence of which features decided.
  void path_counts(const float* x, uint32_t* counts) const;

 private:
  // Children of a split are adjacent (left, left + 1). A leaf points to itself and never
  // turns right (split = 0, whatever the value: +inf is not < +inf), so extra steps stay
  // on it: every vector takes exactly depth steps per tree, without branches, and a
  // batch's walks interleave.
  struct Node {
    float threshold;   // go left when x < threshold; NaN goes the default way
    uint32_t child;    // index of the left child within the model's node array
    uint16_t feature;
    uint8_t default_left;
    uint8_t split;     // 1 for a split, 0 for a leaf
  };

  uint32_t step(const Node& n, const float* x) const {
    float v = x[n.feature];
    bool right = !(v < n.threshold) & !(std::isnan(v) & bool(n.default_left));
    return n.child + uint32_t(right & bool(n.split));
  }
  float leaf(uint32_t t, const float* x) const {
    uint32_t i = trees_[t];
    for (uint32_t d = depth_[t]; d > 0; d--) i = step(nodes_[i], x);
    return leaf_value_[i];
  }
  void finish(float* margin, float* out) const;
  void build_levels();
  void build_quickscorer();
  void build_bins();
  // Adds every tree's leaf for the n rows of x to class-major margins; `masks` is scratch
  // for num_trees() leaf masks.
  void batch_quickscorer(const float* x, size_t n, float* margin, uint64_t* masks) const;
  // Adds every tree's leaf for the n rows of x to class-major margins (margin[c * n + row]);
  // xt is scratch for the rows regrouped 16 at a time, feature-major.
  void batch_avx512(const float* x, size_t n, float* margin, float* xt) const;
  void batch_avx2(const float* x, size_t n, float* margin, float* xt) const;
  // xq: scratch for the rows' bin indices, 64 vectors a block (see build_bins).
  void batch_avx512_bins(const float* x, size_t n, float* margin, uint8_t* xq) const;
  void batch_avx2_bins(const float* x, size_t n, float* margin, uint8_t* xq) const;  // 32 vectors a block
  // walk(D, feat, thr, leaf, depth, acc) for each tree's level arrays and margin row, D a
  // std::integral_constant of its depth (9 for 9 and deeper): one kernel per depth.
  template <class Walk>
  void each_level_tree(size_t n, float* margin, Walk&& walk) const;
  // bin(std::integral_constant<int, M>) for a feature's search depth m (0..8, build_bins).
  template <class Bin>
  static void with_search_steps(uint32_t m, Bin&& bin);
  static TreeModel compile(const nlohmann::json& j, const std::string& name);

  std::vector<Node> nodes_;
  std::vector<float> leaf_value_;   // per node; 0 for splits
  std::vector<uint32_t> depth_;     // steps from the root to the deepest leaf
  std::vector<uint32_t> trees_;      // root index of each tree
  std::vector<uint32_t> tree_class_; // output each tree adds to
  // The same trees for the SIMD kernel, each a full binary tree of its own depth D in
  // level order (level l at [2^l - 1, 2^(l+1) - 1)): a leaf above depth D becomes splits
  // whose leaves below all carry its value, so every walk is D steps of pos = 2 pos + right.
  // lvl_feat_ = 16 × (2 feature + default left): the row's offset in a block (see batch_avx512). Arrays end in 32 pad entries, so 16- and
  // 32-entry loads at any level stay inside them. Empty when some tree is too deep.
  std::vector<int32_t> lvl_feat_;
  std::vector<float> lvl_thr_, lvl_leaf_;
  std::vector<uint32_t> lvl_node_off_, lvl_leaf_off_;
  // The bins kernels' layout (empty when the model does not fit it). A feature's distinct
  // split thresholds t_1 < ... < t_k (k <= 255) cut it into bins: bin(x) = #{t_j <= x},
  // so x < t_j exactly when bin(x) < j, and a node keeps j (lvl_bin_, beside lvl_feat_,
  // 64 pad bytes at the end). bin_tab_ holds, per feature at bin_tab_off_[f], the
  // thresholds as an implicit binary search tree of bin_steps_[f] levels (level s: 2^s
  // entries, at least 16, NaN past t_k) for a branch-free search 8 or 16 lanes at a time.
  std::vector<uint8_t> lvl_bin_, bin_steps_;
  std::vector<float> bin_tab_;
  std::vector<uint32_t> bin_tab_off_;
  // QuickScorer layout (empty when a tree has more than 64 leaves). Per feature f, its
  // split nodes at [qs_off_[f], qs_off_[f + 1]) sorted by threshold; a node failed
  // (x >= threshold) clears the leaves of its left subtree from its tree's mask (leaves
  // numbered left to right), and the exit leaf is the lowest bit left. Nodes sending
  // missing values right are listed again per feature at [qs_nan_off_[f], ...).
  std::vector<uint32_t> qs_off_, qs_tree_, qs_nan_off_, qs_nan_tree_, qs_leaf_off_;
  std::vector<float> qs_thr_, qs_leaf_;
  std::vector<uint64_t> qs_mask_, qs_nan_mask_;
  std::vector<std::string> feature_names_;
  std::string objective_;
  uint32_t num_features_ = 0, num_class_ = 1;
  float base_margin_ = 0;
  enum class Engine : uint8_t { SCALAR, AVX2, AVX512, QUICKSCORER, AVX512BINS, AVX2BINS } engine_ = Engine::SCALAR;
  enum class Link : uint8_t { IDENTITY, SIGMOID, SOFTMAX, ARGMAX } link_ = Link::IDENTITY;
};

}  // namespace ls
