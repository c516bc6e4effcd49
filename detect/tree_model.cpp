#include "detect/tree_model.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

namespace ls {

namespace {

using Json = nlohmann::json;

[[noreturn]] void fail(const std::string& name, const std::string& where, const std::string& what) {
  throw ModelError(name + ": " + where + ": " + what);
}

const Json& need(const std::string& name, const Json& j, const std::string& where, const char* key) {
  if (!j.is_object() || !j.contains(key)) fail(name, where, std::string("missing '") + key + "'");
  return j[key];
}

// learner_model_param values are strings ("5E-1"); accept numbers too.
double num(const std::string& name, const Json& j, const std::string& where) {
  try {
    if (j.is_number()) return j.get<double>();
    if (j.is_string()) {
      size_t used = 0;
      std::string s = j.get<std::string>();
      double v = std::stod(s, &used);
      if (used == s.size()) return v;
    }
  } catch (const std::exception&) {
  }
  fail(name, where, "expected a number, got " + j.dump());
}

template <class T>
std::vector<T> array_of(const std::string& name, const Json& tree, const std::string& where, const char* key,
                        size_t n) {
  const Json& a = need(name, tree, where, key);
  if (!a.is_array() || a.size() != n)
    fail(name, where + "." + key, "expected " + std::to_string(n) + " values (num_nodes)");
  std::vector<T> v;
  v.reserve(n);
  for (auto& x : a) {
    if (!x.is_number()) fail(name, where + "." + key, "non-numeric value " + x.dump());
    v.push_back(x.get<T>());
  }
  return v;
}

}  // namespace

TreeModel TreeModel::load_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw ModelError(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return load_string(ss.str(), path);
}

TreeModel TreeModel::load_string(const std::string& text, const std::string& name) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {  // parse_error, or out_of_range for 1e99999
    throw ModelError(name + ": not JSON (" + e.what() + "); expected Booster.save_model(\"model.json\")");
  }
  try {
    return compile(j, name);
  } catch (const Json::exception& e) {  // a value of the wrong JSON type somewhere
    throw ModelError(name + ": " + e.what());
  }
}

TreeModel TreeModel::compile(const nlohmann::json& j, const std::string& name) {
  TreeModel m;
  const Json& learner = need(name, j, "top level", "learner");
  const Json& param = need(name, learner, "learner", "learner_model_param");
  double base = num(name, need(name, param, "learner.learner_model_param", "base_score"),
                    "learner.learner_model_param.base_score");
  double ncls = param.contains("num_class") ? num(name, param["num_class"], "learner.learner_model_param.num_class") : 0;
  double nfeat = num(name, need(name, param, "learner.learner_model_param", "num_feature"),
                     "learner.learner_model_param.num_feature");
  if (nfeat < 1 || nfeat > 65534) fail(name, "learner.learner_model_param.num_feature", "must be 1 .. 65534");
  m.num_features_ = uint32_t(nfeat);
  const Json& obj = need(name, learner, "learner", "objective");
  m.objective_ = need(name, obj, "learner.objective", "name").get<std::string>();
  const std::string& o = m.objective_;
  float b = float(base);
  auto logit = [&] {
    if (!(b > 0 && b < 1)) fail(name, "learner.learner_model_param.base_score", "must be in (0, 1) for " + o);
    return -std::log(1.0f / b - 1.0f);  // as XGBoost's ProbToMargin, in float
  };
  if (o == "binary:logistic" || o == "reg:logistic") {
    m.link_ = Link::SIGMOID;
    m.base_margin_ = logit();
  } else if (o == "binary:logitraw") {
    m.base_margin_ = logit();
  } else if (o == "multi:softprob" || o == "multi:softmax") {
    if (ncls < 2 || ncls > 1024) fail(name, "learner.learner_model_param.num_class", "must be 2 .. 1024 for " + o);
    m.num_class_ = uint32_t(ncls);
    m.link_ = o == "multi:softprob" ? Link::SOFTMAX : Link::ARGMAX;
    m.base_margin_ = b;
  } else if (o == "reg:squarederror" || o == "reg:squaredlogerror" || o == "reg:pseudohubererror" ||
             o == "reg:absoluteerror") {
    m.base_margin_ = b;
  } else {
    fail(name, "learner.objective.name", "unsupported objective '" + o +
         "' (binary:logistic, binary:logitraw, multi:softprob, multi:softmax, reg:squarederror, reg:logistic)");
  }
  if (learner.contains("feature_names") && learner["feature_names"].is_array())
    for (auto& f : learner["feature_names"]) m.feature_names_.push_back(f.is_string() ? f.get<std::string>() : "");
  const Json& gb = need(name, learner, "learner", "gradient_booster");
  std::string booster = gb.contains("name") && gb["name"].is_string() ? gb["name"].get<std::string>() : "";
  if (booster != "gbtree") fail(name, "learner.gradient_booster.name", "unsupported booster '" + booster + "' (gbtree)");
  const Json& model = need(name, gb, "learner.gradient_booster", "model");
  const Json& trees = need(name, model, "learner.gradient_booster.model", "trees");
  const Json& info = need(name, model, "learner.gradient_booster.model", "tree_info");
  if (!trees.is_array() || !info.is_array() || trees.size() != info.size())
    fail(name, "learner.gradient_booster.model", "trees and tree_info must be arrays of one length");
  for (size_t t = 0; t < trees.size(); t++) {
    std::string where = "learner.gradient_booster.model.trees[" + std::to_string(t) + "]";
    const Json& tr = trees[t];
    double nn = num(name, need(name, need(name, tr, where, "tree_param"), where + ".tree_param", "num_nodes"),
                    where + ".tree_param.num_nodes");
    if (nn < 1 || nn > (1 << 24)) fail(name, where + ".tree_param.num_nodes", "must be 1 .. 2^24");
    size_t n = size_t(nn);
    auto left = array_of<int64_t>(name, tr, where, "left_children", n);
    auto right = array_of<int64_t>(name, tr, where, "right_children", n);
    auto feat = array_of<int64_t>(name, tr, where, "split_indices", n);
    auto cond = array_of<double>(name, tr, where, "split_conditions", n);
    auto defl = array_of<int64_t>(name, tr, where, "default_left", n);
    if (tr.contains("split_type")) {
      auto st = array_of<int64_t>(name, tr, where, "split_type", n);
      for (size_t i = 0; i < n; i++)
        if (st[i] != 0 && left[i] != -1)
          fail(name, where + ".split_type[" + std::to_string(i) + "]", "categorical splits are not supported");
    }
    double cls = num(name, info[t], "learner.gradient_booster.model.tree_info[" + std::to_string(t) + "]");
    if (cls < 0 || cls >= m.num_class_) fail(name, "learner.gradient_booster.model.tree_info", "class out of range");
    // Breadth-first relabelling: a split's two children take adjacent slots.
    uint32_t root = uint32_t(m.nodes_.size());
    std::vector<std::tuple<int64_t, uint32_t, uint32_t>> queue{{0, root, 0}};  // (source, slot, depth)
    std::vector<uint8_t> seen(n, 0);
    uint32_t depth = 0;
    m.nodes_.emplace_back();
    m.leaf_value_.push_back(0);
    for (size_t q = 0; q < queue.size(); q++) {
      auto [src, slot, dep] = queue[q];
      depth = std::max(depth, dep);
      std::string at = where + " node " + std::to_string(src);
      if (seen[size_t(src)]) fail(name, at, "reached twice (not a tree)");
      seen[size_t(src)] = 1;
      Node& nd = m.nodes_[slot];
      nd.default_left = defl[size_t(src)] != 0;
      nd.pad = 0;
      if (left[size_t(src)] == -1) {
        nd.feature = 0;
        nd.threshold = std::numeric_limits<float>::infinity();
        nd.default_left = 1;
        nd.child = slot;
        m.leaf_value_[slot] = float(cond[size_t(src)]);
        continue;
      }
      int64_t l = left[size_t(src)], r = right[size_t(src)];
      if (l < 0 || r < 0 || size_t(l) >= n || size_t(r) >= n) fail(name, at, "child index out of range");
      if (feat[size_t(src)] < 0 || uint64_t(feat[size_t(src)]) >= m.num_features_)
        fail(name, at, "split feature " + std::to_string(feat[size_t(src)]) + " >= num_feature " +
                           std::to_string(m.num_features_));
      nd.feature = uint16_t(feat[size_t(src)]);
      nd.threshold = float(cond[size_t(src)]);
      nd.child = uint32_t(m.nodes_.size());
      queue.push_back({l, nd.child, dep + 1});
      queue.push_back({r, nd.child + 1, dep + 1});
      m.nodes_.emplace_back();  // `nd` may dangle after these: not used again
      m.nodes_.emplace_back();
      m.leaf_value_.resize(m.nodes_.size(), 0);
    }
    m.trees_.push_back(root);
    m.depth_.push_back(depth);
    m.tree_class_.push_back(uint32_t(cls));
  }
  return m;
}

void TreeModel::finish(float* margin, float* out) const {
  switch (link_) {
    case Link::IDENTITY: out[0] = margin[0]; break;
    case Link::SIGMOID: out[0] = 1.0f / (1.0f + std::exp(-margin[0])); break;
    case Link::SOFTMAX:
    case Link::ARGMAX: {
      float mx = *std::max_element(margin, margin + num_class_);
      if (link_ == Link::ARGMAX) {
        out[0] = float(std::max_element(margin, margin + num_class_) - margin);
        break;
      }
      float sum = 0;
      for (uint32_t c = 0; c < num_class_; c++) sum += std::exp(margin[c] - mx);
      for (uint32_t c = 0; c < num_class_; c++) out[c] = std::exp(margin[c] - mx) / sum;
      break;
    }
  }
}

void TreeModel::predict(const float* x, float* out) const {
  float margin[1024];
  std::fill(margin, margin + num_class_, base_margin_);
  // Eight trees' walks at a time: independent chains of loads the CPU overlaps.
  constexpr size_t kLanes = 8;
  size_t t = 0;
  for (; t + kLanes <= trees_.size(); t += kLanes) {
    uint32_t at[kLanes], depth = 0;
    for (size_t j = 0; j < kLanes; j++) {
      at[j] = trees_[t + j];
      depth = std::max(depth, depth_[t + j]);  // leaves loop on themselves
    }
    for (uint32_t d = 0; d < depth; d++)
      for (size_t j = 0; j < kLanes; j++) at[j] = step(nodes_[at[j]], x);
    for (size_t j = 0; j < kLanes; j++) margin[tree_class_[t + j]] += leaf_value_[at[j]];
  }
  for (; t < trees_.size(); t++) margin[tree_class_[t]] += leaf(uint32_t(t), x);
  finish(margin, out);
}

void TreeModel::path_counts(const float* x, uint32_t* counts) const {
  for (size_t t = 0; t < trees_.size(); t++) {
    uint32_t i = trees_[t];
    while (nodes_[i].child != i) {  // a leaf points to itself
      counts[nodes_[i].feature]++;
      i = step(nodes_[i], x);
    }
  }
}

void TreeModel::predict_batch(const float* x, size_t n, float* out, float* margin) const {
  uint32_t k = num_class_;
  uint32_t outs = link_ == Link::ARGMAX ? 1 : k;
  std::fill(margin, margin + n * k, base_margin_);
  constexpr size_t kLanes = 8;  // independent walks in flight: the CPU overlaps their loads
  for (size_t t = 0; t < trees_.size(); t++) {
    uint32_t root = trees_[t], c = tree_class_[t], depth = depth_[t];
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      uint32_t at[kLanes];
      for (size_t j = 0; j < kLanes; j++) at[j] = root;
      for (uint32_t d = 0; d < depth; d++)
        for (size_t j = 0; j < kLanes; j++) at[j] = step(nodes_[at[j]], x + (i + j) * num_features_);
      for (size_t j = 0; j < kLanes; j++) margin[(i + j) * k + c] += leaf_value_[at[j]];
    }
    for (; i < n; i++) margin[i * k + c] += leaf(uint32_t(t), x + i * num_features_);
  }
  for (size_t i = 0; i < n; i++) finish(margin + i * k, out + i * outs);
}

}  // namespace ls
