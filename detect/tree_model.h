// Tree ensembles from XGBoost JSON models (Booster.save_model("model.json")), compiled
// into flat per-tree node arrays for evaluation in the worker pass: binary:logistic,
// multi:softprob / multi:softmax, reg:squarederror / reg:logistic, numeric splits, missing
// values (NaN) with each node's default direction. No allocation per prediction.
#pragma once
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
  // n vectors, row-major (stride = num_features()); trees outermost so each tree's nodes
  // stay in cache across the batch. `margin` needs n × num_outputs() floats of scratch.
  void predict_batch(const float* x, size_t n, float* out, float* margin) const;
  // How often each feature was split on along this vector's paths (counts has
  // num_features() entries, added to): the evidence of which features decided.
  void path_counts(const float* x, uint32_t* counts) const;

 private:
  // Children of a split are adjacent (left, left + 1). A leaf points to itself with a
  // threshold of +inf and default left, so extra steps stay on it: every vector takes
  // exactly depth steps per tree, without branches, and a batch's walks interleave.
  struct Node {
    float threshold;   // go left when x < threshold; NaN goes the default way
    uint32_t child;    // index of the left child within the model's node array
    uint16_t feature;
    uint8_t default_left;
    uint8_t pad;
  };

  uint32_t step(const Node& n, const float* x) const {
    float v = x[n.feature];
    bool right = !(v < n.threshold) & !(std::isnan(v) & bool(n.default_left));
    return n.child + uint32_t(right);
  }
  float leaf(uint32_t t, const float* x) const {
    uint32_t i = trees_[t];
    for (uint32_t d = depth_[t]; d > 0; d--) i = step(nodes_[i], x);
    return leaf_value_[i];
  }
  void finish(float* margin, float* out) const;
  static TreeModel compile(const nlohmann::json& j, const std::string& name);

  std::vector<Node> nodes_;
  std::vector<float> leaf_value_;   // per node; 0 for splits
  std::vector<uint32_t> depth_;     // steps from the root to the deepest leaf
  std::vector<uint32_t> trees_;      // root index of each tree
  std::vector<uint32_t> tree_class_; // output each tree adds to
  std::vector<std::string> feature_names_;
  std::string objective_;
  uint32_t num_features_ = 0, num_class_ = 1;
  float base_margin_ = 0;
  enum class Link : uint8_t { IDENTITY, SIGMOID, SOFTMAX, ARGMAX } link_ = Link::IDENTITY;
};

}  // namespace ls
