#include "detect/tree_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ls {

namespace {

using Json = nlohmann::json;

int default_engine();
int best_cpu_engine();

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
    if constexpr (std::is_integral_v<T>) {
      // A float out of T's range converted to T is undefined: check it in double first.
      if (x.is_number_float()) {
        double d = x.get<double>();
        if (!(d >= double(std::numeric_limits<T>::min()) && d < std::ldexp(1.0, std::numeric_limits<T>::digits)) ||
            d != std::trunc(d))
          fail(name, where + "." + key, "not an integer in range: " + x.dump());
      }
    }
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
      nd.split = 0;
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
      nd.split = 1;
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
  m.build_levels();
  m.build_quickscorer();
  m.build_bins();
  int e = default_engine();
  if (e == 3 && m.qs_off_.empty()) e = best_cpu_engine();  // asked for, but a tree is too big
  if (e >= 4 && m.lvl_bin_.empty()) e = e == 4 ? 2 : 1;    // too deep, or too many thresholds
  m.engine_ = e == 3 ? Engine::QUICKSCORER : m.lvl_feat_.empty() ? Engine::SCALAR : Engine(e);
  return m;
}

void TreeModel::build_quickscorer() {
  struct QsNode {
    float thr;
    uint32_t tree;
    uint64_t mask;
  };
  std::vector<std::vector<QsNode>> by_feat(num_features_), nan_right(num_features_);
  std::vector<uint32_t> leaf_off;
  std::vector<float> leaves;
  for (size_t t = 0; t < trees_.size(); t++) {
    leaf_off.push_back(uint32_t(leaves.size()));
    // Depth first, left before right: leaves get bits 0, 1, ... from the left. A split's
    // left subtree holds the leaves numbered while it is walked.
    struct Frame {
      uint32_t node;
      uint32_t first_leaf;  // bit of the first leaf below it
      bool left_done;
    };
    std::vector<Frame> stack{{trees_[t], 0, false}};
    uint32_t next = 0;
    while (!stack.empty()) {
      Frame& f = stack.back();
      const Node& nd = nodes_[f.node];
      if (nd.child == f.node) {  // a leaf
        if (next == 64) return;  // more than 64 leaves: no QuickScorer layout
        leaves.push_back(leaf_value_[f.node]);
        next++;
        stack.pop_back();
        continue;
      }
      if (!f.left_done) {
        f.left_done = true;
        f.first_leaf = next;
        stack.push_back({nd.child, 0, false});
        continue;
      }
      if (std::isnan(nd.threshold)) return;  // would break the sorted prefix
      // Left subtree done: its leaves are [first_leaf, next).
      uint64_t left = (next == 64 ? ~0ull : (1ull << next) - 1) & ~((1ull << f.first_leaf) - 1);
      QsNode q{nd.threshold, uint32_t(t), ~left};
      by_feat[nd.feature].push_back(q);
      if (!nd.default_left) nan_right[nd.feature].push_back(q);
      uint32_t right = nd.child + 1;
      stack.pop_back();
      stack.push_back({right, 0, false});
    }
  }
  qs_off_.push_back(0);
  qs_nan_off_.push_back(0);
  for (uint32_t f = 0; f < num_features_; f++) {
    auto& v = by_feat[f];
    std::stable_sort(v.begin(), v.end(), [](const QsNode& a, const QsNode& b) { return a.thr < b.thr; });
    for (auto& q : v) {
      qs_thr_.push_back(q.thr);
      qs_tree_.push_back(q.tree);
      qs_mask_.push_back(q.mask);
    }
    for (auto& q : nan_right[f]) {
      qs_nan_tree_.push_back(q.tree);
      qs_nan_mask_.push_back(q.mask);
    }
    qs_off_.push_back(uint32_t(qs_thr_.size()));
    qs_nan_off_.push_back(uint32_t(qs_nan_tree_.size()));
  }
  qs_leaf_off_ = std::move(leaf_off);
  qs_leaf_ = std::move(leaves);
}

void TreeModel::batch_quickscorer(const float* x, size_t n, float* margin, uint64_t* masks) const {
  const size_t T = trees_.size();
  for (size_t i = 0; i < n; i++) {
    const float* v = x + i * num_features_;
    std::fill(masks, masks + T, ~0ull);
    for (uint32_t f = 0; f < num_features_; f++) {
      float xf = v[f];
      if (std::isnan(xf)) {
        for (uint32_t k = qs_nan_off_[f]; k < qs_nan_off_[f + 1]; k++) masks[qs_nan_tree_[k]] &= qs_nan_mask_[k];
        continue;
      }
      // Nodes sorted by threshold: x fails (goes right at) exactly a prefix of them.
      for (uint32_t k = qs_off_[f], e = qs_off_[f + 1]; k < e && qs_thr_[k] <= xf; k++)
        masks[qs_tree_[k]] &= qs_mask_[k];
    }
    for (size_t t = 0; t < T; t++)
      margin[size_t(tree_class_[t]) * n + i] += qs_leaf_[qs_leaf_off_[t] + uint32_t(__builtin_ctzll(masks[t]))];
  }
}

void TreeModel::build_levels() {
  size_t total = 0;
  for (uint32_t d : depth_) {
    if (d > kMaxSimdDepth) return;
    total += size_t(1) << (d + 1);
  }
  // Filled out, lopsided trees grow to 2^depth: past ~50 MB keep the scalar walk.
  if (total > (size_t(1) << 22)) return;
  for (size_t t = 0; t < trees_.size(); t++) {
    uint32_t d = depth_[t];
    size_t off = lvl_feat_.size();
    lvl_node_off_.push_back(uint32_t(off));
    lvl_leaf_off_.push_back(uint32_t(lvl_leaf_.size()));
    lvl_feat_.resize(off + (size_t(1) << d) - 1);
    lvl_thr_.resize(lvl_feat_.size());
    lvl_leaf_.resize(lvl_leaf_.size() + (size_t(1) << d));
    float* leaf = &lvl_leaf_[lvl_leaf_off_.back()];
    // (node, level, position in level); a leaf reached above depth d fills its whole span.
    std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> todo{{trees_[t], 0, 0}};
    while (!todo.empty()) {
      auto [i, l, p] = todo.back();
      todo.pop_back();
      const Node& nd = nodes_[i];
      bool is_leaf = nd.child == i;
      if (l == d || is_leaf) {
        if (l < d) {  // split nodes below it: any direction reaches the same value
          for (uint32_t k = l, q = p; k < d; k++, q *= 2)
            for (uint32_t j = 0; j < (1u << (k - l)); j++) {
              lvl_feat_[off + (1u << k) - 1 + q + j] = 0;
              lvl_thr_[off + (1u << k) - 1 + q + j] = 0;
            }
        }
        uint32_t span = 1u << (d - l);
        std::fill(leaf + size_t(p) * span, leaf + size_t(p + 1) * span, leaf_value_[i]);
        continue;
      }
      // x < -inf is never true, so a missing value sent left as -inf would go right.
      if (std::isnan(nd.threshold) || (nd.threshold == -std::numeric_limits<float>::infinity() && nd.default_left)) {
        lvl_feat_.clear();  // the scalar walk for the whole model
        lvl_thr_.clear();
        lvl_leaf_.clear();
        lvl_node_off_.clear();
        lvl_leaf_off_.clear();
        return;
      }
      size_t at = off + (1u << l) - 1 + p;
      lvl_feat_[at] = int32_t((2 * uint32_t(nd.feature) + nd.default_left) * 16);
      lvl_thr_[at] = nd.threshold;
      todo.push_back({nd.child, l + 1, 2 * p});
      todo.push_back({nd.child + 1, l + 1, 2 * p + 1});
    }
  }
  lvl_feat_.resize(lvl_feat_.size() + 32, 0);
  lvl_thr_.resize(lvl_feat_.size(), 0);
  lvl_leaf_.resize(lvl_leaf_.size() + 32, 0);
}

void TreeModel::build_bins() {
  if (lvl_feat_.empty()) return;
  for (uint32_t d : depth_)
    if (d > kMaxBinDepth) return;
  std::vector<std::vector<float>> cuts(num_features_);
  for (const Node& nd : nodes_)
    if (nd.split) cuts[nd.feature].push_back(nd.threshold);
  for (auto& c : cuts) {
    std::sort(c.begin(), c.end());
    c.erase(std::unique(c.begin(), c.end()), c.end());
    if (c.size() > 255) return;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (uint32_t f = 0; f < num_features_; f++) {
    // Search level s holds t at the 1-based ranks (2j + 1) 2^(m-1-s); a lane at entry j
    // goes to 2j + (x >= entry), and after m levels stands on bin(x). NaN entries (past
    // t_k) compare false: the search never counts them.
    uint32_t k = uint32_t(cuts[f].size()), m = uint32_t(std::bit_width(k));
    bin_steps_.push_back(uint8_t(m));
    bin_tab_off_.push_back(uint32_t(bin_tab_.size()));
    for (uint32_t lv = 0; lv < m; lv++) {
      size_t at = bin_tab_.size();
      bin_tab_.resize(at + std::max<size_t>(16, size_t(1) << lv), nan);
      for (uint32_t j = 0; j < (1u << lv); j++) {
        uint32_t rank = (2 * j + 1) << (m - 1 - lv);
        if (rank <= k) bin_tab_[at + j] = cuts[f][rank - 1];
      }
    }
  }
  lvl_bin_.resize(lvl_feat_.size() + 64, 0);
  for (size_t i = 0; i + 32 < lvl_feat_.size(); i++) {
    // Filler splits under a leaf (feature 0, threshold 0) may miss: either way is right.
    const auto& c = cuts[size_t(lvl_feat_[i]) / 32];
    size_t rank = size_t(std::lower_bound(c.begin(), c.end(), lvl_thr_[i]) - c.begin()) + 1;
    lvl_bin_[i] = uint8_t(std::min<size_t>(255, rank));
  }
}

template <class Walk>
void TreeModel::each_level_tree(size_t n, float* margin, Walk&& walk) const {
  for (size_t t = 0; t < trees_.size(); t++) {
    const int32_t* feat = lvl_feat_.data() + lvl_node_off_[t];
    const float* thr = lvl_thr_.data() + lvl_node_off_[t];
    const float* leaf = lvl_leaf_.data() + lvl_leaf_off_[t];
    float* acc = margin + size_t(tree_class_[t]) * n;
    uint32_t d = depth_[t];
    auto at = [&](auto D) { walk(D, feat, thr, leaf, d, acc); };
    switch (d) {
      case 0: at(std::integral_constant<int, 0>{}); break;
      case 1: at(std::integral_constant<int, 1>{}); break;
      case 2: at(std::integral_constant<int, 2>{}); break;
      case 3: at(std::integral_constant<int, 3>{}); break;
      case 4: at(std::integral_constant<int, 4>{}); break;
      case 5: at(std::integral_constant<int, 5>{}); break;
      case 6: at(std::integral_constant<int, 6>{}); break;
      case 7: at(std::integral_constant<int, 7>{}); break;
      case 8: at(std::integral_constant<int, 8>{}); break;
      default: at(std::integral_constant<int, 9>{}); break;
    }
  }
}

template <class Bin>
void TreeModel::with_search_steps(uint32_t m, Bin&& bin) {
  switch (m) {
    case 0: bin(std::integral_constant<int, 0>{}); break;
    case 1: bin(std::integral_constant<int, 1>{}); break;
    case 2: bin(std::integral_constant<int, 2>{}); break;
    case 3: bin(std::integral_constant<int, 3>{}); break;
    case 4: bin(std::integral_constant<int, 4>{}); break;
    case 5: bin(std::integral_constant<int, 5>{}); break;
    case 6: bin(std::integral_constant<int, 6>{}); break;
    case 7: bin(std::integral_constant<int, 7>{}); break;
    default: bin(std::integral_constant<int, 8>{}); break;
  }
}

namespace {
// Indexed by Engine. By rank (quickscorer, 3, apart), the faster where both run.
constexpr const char* kEngineNames[] = {"scalar", "avx2", "avx512", "quickscorer", "avx512bins", "avx2bins"};
constexpr int kEngineRank[] = {0, 1, 3, -1, 4, 2};
constexpr int kEngines = 6;

bool cpu_runs(int engine) {
#if defined(__x86_64__)
  if (engine == 4) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  if (engine == 2) return __builtin_cpu_supports("avx512f");
  if (engine == 1 || engine == 5) return __builtin_cpu_supports("avx2");
#endif
  return engine == 0 || engine == 3;
}

int best_cpu_engine() {
  for (int e : {4, 2, 5, 1})
    if (cpu_runs(e)) return e;
  return 0;
}

// The best kernel this CPU runs, capped by LINESIGHT_BATCH_ENGINE (read once).
int default_engine() {
  static const int best = [] {
    int b = best_cpu_engine();
    if (const char* e = std::getenv("LINESIGHT_BATCH_ENGINE")) {
      int cap = -1;
      for (int i = 0; i < kEngines; i++)
        if (std::string(e) == kEngineNames[i]) cap = i;
      if (cap < 0)
        std::fprintf(stderr,
                     "linesight: LINESIGHT_BATCH_ENGINE=%s: not scalar, avx2, avx2bins, avx512, avx512bins or "
                     "quickscorer; ignored\n", e);
      else if (cap == 3 || kEngineRank[cap] < kEngineRank[b])
        b = cap;
    }
    return b;
  }();
  return best;
}
}  // namespace

const char* TreeModel::batch_engine() const { return kEngineNames[int(engine_)]; }

bool TreeModel::set_batch_engine(const std::string& name) {
  for (int i = 0; i < kEngines; i++)
    if (name == kEngineNames[i] && cpu_runs(i) &&
        (i == 0 || (i == 3 ? !qs_off_.empty() : i >= 4 ? !lvl_bin_.empty() : !lvl_feat_.empty()))) {
      engine_ = Engine(i);
      return true;
    }
  return false;
}

#if defined(__x86_64__)
// GCC 12 warns inside its own avx512fintrin.h (_mm512_undefined_* placeholders).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
namespace {
// Tree levels whose node values are picked by loads and blends instead of gathered.
constexpr int kSelectLevels = 4;
constexpr size_t kBlocks = 4;  // blocks of 16 walked together: independent chains in flight

#define LS_AVX512 __attribute__((target("avx512f"), always_inline)) inline

// Gathers into a zeroed register, so no gather waits on an older value of its
// destination (the plain intrinsics merge into it; no difference measured here).
LS_AVX512 __m512 gather_ps(__m512i idx, const float* base) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff, idx, base, 4);
}
LS_AVX512 __m512i gather_epi32(__m512i idx, const int32_t* base) {
  return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0xffff, idx, base, 4);
}

// The values of 16 vectors at the level-L node each lane stands on: the 2^L nodes'
// feature rows loaded whole, then narrowed by the turns taken above (turn[k]: lanes that
// went right at level k). On Zen 5 a 16-float gather costs ~20 cycles: for the top
// levels loads and blends are cheaper; deeper levels gather.
template <int L>
LS_AVX512 __m512 select_level(const float* xb, const int32_t* fl, const __mmask16* turn) {
  constexpr int W = 1 << L;
  __m512 r[W];
  for (int j = 0; j < W; j++) r[j] = _mm512_loadu_ps(xb + fl[j]);
  for (int k = L - 1, w = W; k >= 0; k--) {
    w /= 2;
    for (int j = 0; j < w; j++) r[j] = _mm512_mask_blend_ps(turn[k], r[2 * j], r[2 * j + 1]);
  }
  return r[0];
}

// One level for kBlocks blocks: pos = 2 pos + (went right). Missing values were replaced
// in the block by -inf or +inf per default direction, so one `v < threshold` decides.
template <int L>
LS_AVX512 void level_step(const int32_t* feat, const float* thr, const float* const* xb, __m512i* pos,
                          __mmask16 (*turn)[6]) {
  const int32_t* fl = feat + (1 << L) - 1;
  const float* tl = thr + (1 << L) - 1;
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (size_t g = 0; g < kBlocks; g++) {
    __m512 th, v;
    if constexpr (L <= 5)  // the level's thresholds fit two registers
      th = _mm512_permutex2var_ps(_mm512_loadu_ps(tl), pos[g], _mm512_loadu_ps(tl + 16));
    else
      th = gather_ps(pos[g], tl);
    if constexpr (L < kSelectLevels) {
      v = select_level<L>(xb[g], fl, turn[g]);
    } else {
      __m512i f = L <= 5 ? _mm512_permutex2var_epi32(_mm512_loadu_si512(fl), pos[g], _mm512_loadu_si512(fl + 16))
                         : gather_epi32(pos[g], fl);
      v = gather_ps(_mm512_add_epi32(lane, f), xb[g]);
    }
    __mmask16 right = _mm512_cmp_ps_mask(v, th, _CMP_NLT_UQ);
    if constexpr (L < 6) turn[g][L] = right;
    pos[g] = _mm512_mask_add_epi32(_mm512_add_epi32(pos[g], pos[g]), right, _mm512_add_epi32(pos[g], pos[g]), one);
  }
}

// r[j] = row j of a 16 × 16 tile → r[k] = column k: pairs, then quads, then 128-bit
// lanes of four, then of eight.
LS_AVX512 void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; i++) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

// Columns c .. c + w - 1 (w <= 16) of rows first .. first + 15 of x (rows past n repeat
// the last) → r[k] = column c + k over those 16 rows.
LS_AVX512 void load_columns16(const float* x, size_t n, size_t F, size_t first, size_t c, size_t w, __m512* r) {
  __mmask16 cols = __mmask16((1u << w) - 1);
  for (size_t j = 0; j < 16; j++) r[j] = _mm512_maskz_loadu_ps(cols, x + std::min(first + j, n - 1) * F + c);
  transpose16(r);
}

LS_AVX512 __m512 leaf_values(const float* leaf, uint32_t d, __m512i pos) {
  if (d <= 5) return _mm512_permutex2var_ps(_mm512_loadu_ps(leaf), pos, _mm512_loadu_ps(leaf + 16));
  if (d == 6) {
    __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(leaf), pos, _mm512_loadu_ps(leaf + 16));
    __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(leaf + 32), pos, _mm512_loadu_ps(leaf + 48));
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(pos, _mm512_set1_epi32(32)), lo, hi);
  }
  return gather_ps(pos, leaf);
}

// Blocks b0 .. b0 + kBlocks - 1 (those past `blocks` repeat the last) through one tree of
// depth D; levels unrolled, and past 8 walked in a loop.
template <int D>
__attribute__((target("avx512f"))) void walk_tree(const int32_t* feat, const float* thr, const float* leaf,
                                                  uint32_t depth, const float* xt, size_t F, size_t n, size_t b0,
                                                  float* acc) {
  const size_t blocks = (n + 15) / 16;
  const float* xb[kBlocks];
  __m512i pos[kBlocks];
  __mmask16 turn[kBlocks][6];
  for (size_t g = 0; g < kBlocks; g++) {
    xb[g] = xt + std::min(b0 + g, blocks - 1) * 32 * F;  // a missing block repeats the last
    pos[g] = _mm512_setzero_si512();
  }
  if constexpr (D > 0) level_step<0>(feat, thr, xb, pos, turn);
  if constexpr (D > 1) level_step<1>(feat, thr, xb, pos, turn);
  if constexpr (D > 2) level_step<2>(feat, thr, xb, pos, turn);
  if constexpr (D > 3) level_step<3>(feat, thr, xb, pos, turn);
  if constexpr (D > 4) level_step<4>(feat, thr, xb, pos, turn);
  if constexpr (D > 5) level_step<5>(feat, thr, xb, pos, turn);
  if constexpr (D > 6) level_step<6>(feat, thr, xb, pos, turn);
  if constexpr (D > 7) level_step<7>(feat, thr, xb, pos, turn);
  if constexpr (D > 8) {  // deeper levels: all gathered, same step with a run-time level
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (uint32_t l = 8; l < depth; l++)
      for (size_t g = 0; g < kBlocks; g++) {
        __m512i f = gather_epi32(pos[g], feat + (1u << l) - 1);
        __m512 th = gather_ps(pos[g], thr + (1u << l) - 1);
        __m512 v = gather_ps(_mm512_add_epi32(lane, f), xb[g]);
        __mmask16 right = _mm512_cmp_ps_mask(v, th, _CMP_NLT_UQ);
        pos[g] = _mm512_mask_add_epi32(_mm512_add_epi32(pos[g], pos[g]), right, _mm512_add_epi32(pos[g], pos[g]), one);
      }
  }
  for (size_t g = 0; g < kBlocks && b0 + g < blocks; g++) {
    size_t i = (b0 + g) * 16;
    __mmask16 live = __mmask16((1u << std::min<size_t>(16, n - i)) - 1);
    __m512 lv = leaf_values(leaf, depth, pos[g]);
    _mm512_mask_storeu_ps(acc + i, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, acc + i), lv));
  }
}
}  // namespace

__attribute__((target("avx512f"))) void TreeModel::batch_avx512(const float* x, size_t n, float* margin,
                                                                float* xt) const {
  const size_t F = num_features_, blocks = (n + 15) / 16;
  // Feature-major blocks of 16 vectors, two rows per feature: missing as +inf (goes
  // right) and as -inf (goes left), so a node reads the row of its default direction and
  // one comparison decides. One row of 16 vectors is one 64-byte load. Lanes past n copy
  // the last vector.
  const __m512 pinf = _mm512_set1_ps(std::numeric_limits<float>::infinity()), ninf = _mm512_sub_ps(_mm512_setzero_ps(), pinf);
  for (size_t b = 0; b < blocks; b++)
    for (size_t c = 0; c < F; c += 16) {
      size_t w = std::min<size_t>(16, F - c);
      __m512 r[16];
      load_columns16(x, n, F, b * 16, c, w, r);
      float* out = xt + b * 32 * F + c * 32;
      for (size_t k = 0; k < w; k++) {
        __mmask16 missing = _mm512_cmp_ps_mask(r[k], r[k], _CMP_UNORD_Q);
        _mm512_storeu_ps(out + k * 32, _mm512_mask_mov_ps(r[k], missing, pinf));
        _mm512_storeu_ps(out + k * 32 + 16, _mm512_mask_mov_ps(r[k], missing, ninf));
      }
    }
  // Groups of blocks outermost: their 32 × F floats each stay in L1 while every tree's
  // few level rows come from L2.
  for (size_t b0 = 0; b0 < blocks; b0 += kBlocks)
    each_level_tree(n, margin, [&](auto D, const int32_t* feat, const float* thr, const float* leaf, uint32_t d,
                                   float* acc) { walk_tree<D()>(feat, thr, leaf, d, xt, F, n, b0, acc); });
}

// The avx512bins kernel: 64 vectors a block, each feature's value as its bin index (one
// byte), two rows per feature as in batch_avx512 (missing as bin 255: right of every node;
// as bin 0: left of every node, whose ranks start at 1). A row of 64 lanes is one load:
// the lanes' values at a node are picked by loads and blends at every level, and the
// node's rank by byte shuffles; no gathers.
namespace {
constexpr int kBinLevels = int(TreeModel::kMaxBinDepth);

#define LS_AVX512B __attribute__((target("avx512f,avx512bw"), always_inline)) inline

// Search levels S .. M - 1 of a feature's tree (build_bins) for a block's four quarters
// at once: four independent chains of permute, compare and step.
template <int S, int M>
LS_AVX512B void search_bins(const float* tab, const __m512* x, __m512i* j) {
  if constexpr (S < M) {
    const __m512i one = _mm512_set1_epi32(1);
    for (int q = 0; q < 4; q++) {
      __m512 probe;
      if constexpr (S <= 4) {  // up to 16 entries: one permute
        probe = _mm512_permutexvar_ps(j[q], _mm512_loadu_ps(tab));
      } else {  // 32 per two-register permute, then blends on j's higher bits
        constexpr int kPairs = 1 << (S - 5);
        __m512 v[kPairs];
        for (int p = 0; p < kPairs; p++)
          v[p] = _mm512_permutex2var_ps(_mm512_loadu_ps(tab + 32 * p), j[q], _mm512_loadu_ps(tab + 32 * p + 16));
        for (int bit = 32, w = kPairs; w > 1; bit *= 2, w /= 2)
          for (int i = 0; i < w / 2; i++)
            v[i] = _mm512_mask_blend_ps(_mm512_test_epi32_mask(j[q], _mm512_set1_epi32(bit)), v[2 * i], v[2 * i + 1]);
        probe = v[0];
      }
      __mmask16 ge = _mm512_cmp_ps_mask(x[q], probe, _CMP_GE_OQ);
      j[q] = _mm512_mask_add_epi32(_mm512_add_epi32(j[q], j[q]), ge, _mm512_add_epi32(j[q], j[q]), one);
    }
    search_bins<S + 1, M>(tab + (S <= 4 ? 16 : 1 << S), x, j);
  }
}

// One feature's 64 values (col) → its two byte rows in the block.
template <int M>
__attribute__((target("avx512f,avx512bw"))) void bin_feature(const float* col, const float* tab, uint8_t* row_right,
                                                             uint8_t* row_left) {
  __m512 x[4];
  __m512i j[4];
  for (int q = 0; q < 4; q++) {
    x[q] = _mm512_load_ps(col + 16 * q);
    j[q] = _mm512_setzero_si512();
  }
  search_bins<0, M>(tab, x, j);
  const __m512i all = _mm512_set1_epi32(255);
  for (int q = 0; q < 4; q++) {
    __mmask16 missing = _mm512_cmp_ps_mask(x[q], x[q], _CMP_UNORD_Q);  // the search left them at 0
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row_right + 16 * q),
                     _mm512_cvtepi32_epi8(_mm512_mask_mov_epi32(j[q], missing, all)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row_left + 16 * q), _mm512_cvtepi32_epi8(j[q]));
  }
}

// The value each lane of a block reads at its level-L node: W nodes fl[0], fl[S], ... split
// by turn K (the newest first), so only the last blend waits on the newest turn.
template <int W, int S, int K>
LS_AVX512B __m512i pick_bins(const uint8_t* xb, const int32_t* fl, const __mmask64* turn) {
  if constexpr (W == 1)
    return _mm512_loadu_si512(xb + 4 * size_t(fl[0]));  // fl: 16 (2 feature + default left)
  else
    return _mm512_mask_blend_epi8(turn[K], pick_bins<W / 2, 2 * S, K - 1>(xb, fl, turn),
                                  pick_bins<W / 2, 2 * S, K - 1>(xb, fl + S, turn));
}

// The level's ranks at each lane's position: 16 ranks per byte shuffle (within 16-byte
// lanes: AVX512BW, no VBMI), wider levels by blends on pos's bits 4 and up.
template <int W>
LS_AVX512B __m512i ranks_at(const uint8_t* rl, __m512i pos) {
  if constexpr (W <= 16)
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rl))), pos);
  else
    return _mm512_mask_blend_epi8(_mm512_test_epi8_mask(pos, _mm512_set1_epi8(char(W / 2))), ranks_at<W / 2>(rl, pos),
                                  ranks_at<W / 2>(rl + W / 2, pos));
}

// One level: pos = 2 pos + (went right), for the 64 lanes of a block.
template <int L>
LS_AVX512B void bin_step(const int32_t* feat, const uint8_t* rank, const uint8_t* xb, __m512i& pos,
                         __mmask64* turn) {
  const int32_t* fl = feat + (1 << L) - 1;
  __m512i th = ranks_at<(1 << L)>(rank + (1 << L) - 1, pos);
  const __m512i one = _mm512_set1_epi8(1);
  __m512i v = pick_bins<1 << L, 1, L - 1>(xb, fl, turn);
  __mmask64 right = _mm512_cmp_epu8_mask(v, th, _MM_CMPINT_NLT);
  if constexpr (L < kBinLevels - 1) turn[L] = right;
  pos = _mm512_mask_add_epi8(_mm512_add_epi8(pos, pos), right, _mm512_add_epi8(pos, pos), one);
}

// Levels L .. D - 1, unrolled.
template <int L, int D>
LS_AVX512B void bin_steps(const int32_t* feat, const uint8_t* rank, const uint8_t* xb, __m512i& pos, __mmask64* turn) {
  if constexpr (L < D) {
    bin_step<L>(feat, rank, xb, pos, turn);
    bin_steps<L + 1, D>(feat, rank, xb, pos, turn);
  }
}

// Block b through one tree of depth D. (Two blocks in flight, as batch_avx512 walks four:
// 100 trees of depth 6 ~15 % slower here, their level-5 rows spilled to the stack.)
template <int D>
LS_AVX512B void walk_block(const int32_t* feat, const uint8_t* rank, const float* leaf, const uint8_t* xq, size_t F,
                           size_t n, size_t b, float* acc) {
  const uint8_t* xb = xq + b * 128 * F;
  __m512i pos = _mm512_setzero_si512();
  __mmask64 turn[kBinLevels];
  bin_steps<0, D>(feat, rank, xb, pos, turn);
  const __m128i quarter[4] = {_mm512_castsi512_si128(pos), _mm512_extracti32x4_epi32(pos, 1),
                              _mm512_extracti32x4_epi32(pos, 2), _mm512_extracti32x4_epi32(pos, 3)};
  for (int q = 0; q < 4; q++) {
    size_t i = b * 64 + size_t(q) * 16;
    if (i >= n) break;
    __mmask16 live = __mmask16((1u << std::min<size_t>(16, n - i)) - 1);
    __m512 lv = leaf_values(leaf, D, _mm512_cvtepu8_epi32(quarter[q]));
    _mm512_mask_storeu_ps(acc + i, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, acc + i), lv));
  }
}
// Every block of the batch through one tree.
template <int D>
__attribute__((target("avx512f,avx512bw"))) void walk_bins(const int32_t* feat, const uint8_t* rank, const float* leaf,
                                                           const uint8_t* xq, size_t F, size_t n, float* acc) {
  for (size_t b = 0; b < (n + 63) / 64; b++) walk_block<D>(feat, rank, leaf, xq, F, n, b, acc);
}
}  // namespace

__attribute__((target("avx512f,avx512bw"))) void TreeModel::batch_avx512_bins(const float* x, size_t n,
                                                                              float* margin, uint8_t* xq) const {
  const size_t F = num_features_, blocks = (n + 63) / 64;
  alignas(64) float col[16][64];  // 16 features × the block's 64 vectors
  if (n % 64) std::memset(col, 0, sizeof col);  // quarters past n: binned, never kept
  for (size_t b = 0; b < blocks; b++) {
    uint8_t* out = xq + b * 128 * F;
    int quarters = int(std::min<size_t>(4, (n - b * 64 + 15) / 16));
    for (size_t c = 0; c < F; c += 16) {
      size_t w = std::min<size_t>(16, F - c);
      for (int q = 0; q < quarters; q++) {  // lanes past n copy the last vector
        __m512 r[16];
        load_columns16(x, n, F, b * 64 + size_t(q) * 16, c, w, r);
        for (size_t k = 0; k < w; k++) _mm512_store_ps(&col[k][16 * q], r[k]);
      }
      for (size_t k = 0; k < w; k++) {
        size_t f = c + k;
        if (bin_steps_[f] == 0 && f > 0) continue;  // no node reads it (fillers read feature 0)
        const float* tab = bin_tab_.data() + bin_tab_off_[f];
        uint8_t *right = out + 2 * f * 64, *left = right + 64;
        with_search_steps(bin_steps_[f], [&](auto M) { bin_feature<M()>(col[k], tab, right, left); });
      }
    }
  }
  // Trees outermost, every block through each: a batch of 256 is 20 KB of rows for 40
  // features, in L1 with the tree.
  each_level_tree(n, margin, [&](auto D, const int32_t* feat, const float*, const float* leaf, uint32_t, float* acc) {
    const uint8_t* rank = lvl_bin_.data() + (feat - lvl_feat_.data());
    walk_bins<std::min(D(), kBinLevels)>(feat, rank, leaf, xq, F, n, acc);  // bins: depth <= 8
  });
}

// The AVX2 kernel: the same level-order walk as above, 8 lanes per register (a 16-vector
// block is two groups: its lanes 0-7 and 8-15). No mask registers: a turn is a compare's
// all-ones lanes, and pos = 2 pos - (all-ones = -1).
namespace {
constexpr size_t kGroups = 4;        // 8-lane groups walked together
constexpr int kSelectLevels8 = 3;    // levels whose values are picked by loads and blends
constexpr int kPickLevels8 = 5;      // deepest level whose node rows are permuted, not gathered

#define LS_AVX2 __attribute__((target("avx2"), always_inline)) inline

// Entry pos of t[0, 2^L) in each lane: one permute per 8 entries, then blends on pos's
// bits from 3 up (blendv reads the sign bit: bit L-1 shifted there).
template <int L>
LS_AVX2 __m256 pick8(const float* t, __m256i pos) {
  if constexpr (L <= 3) {
    return _mm256_permutevar8x32_ps(_mm256_loadu_ps(t), pos);
  } else {
    __m256 lo = pick8<L - 1>(t, pos), hi = pick8<L - 1>(t + (1 << (L - 1)), pos);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(pos, 32 - L)));
  }
}

template <int L>
LS_AVX2 __m256 select_level8(const float* xb, const int32_t* fl, const __m256* turn) {
  constexpr int W = 1 << L;
  __m256 r[W];
  for (int j = 0; j < W; j++) r[j] = _mm256_loadu_ps(xb + fl[j]);
  for (int k = L - 1, w = W; k >= 0; k--) {
    w /= 2;
    for (int j = 0; j < w; j++) r[j] = _mm256_blendv_ps(r[2 * j], r[2 * j + 1], turn[k]);
  }
  return r[0];
}

LS_AVX2 __m256i lanes8() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }

// r[j] = row j of an 8 x 8 tile -> r[k] = column k.
LS_AVX2 void transpose8(__m256* r) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    r[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xee);
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xee);
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; i++) r[i] = t[i];
}

// load_columns16 with 8 × 8 tiles: r[k] = column c + k (w <= 8) over rows first .. first + 7.
LS_AVX2 void load_columns8(const float* x, size_t n, size_t F, size_t first, size_t c, size_t w, __m256* r) {
  __m256i cols = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(w)), lanes8());
  for (size_t j = 0; j < 8; j++) r[j] = _mm256_maskload_ps(x + std::min(first + j, n - 1) * F + c, cols);
  transpose8(r);
}

// The layout of batch_avx512's blocks (16 vectors, feature-major, each feature as two
// rows: missing as +inf, missing as -inf), filled by 8 x 8 tiles: group q is lanes
// 8 (q % 2) .. + 7 of block q / 2. Lanes past n copy the last vector; a block's second
// half past n is left unwritten (no group reads it: missing groups repeat the last).
LS_AVX2 void fill_blocks8(const float* x, size_t n, size_t F, float* xt) {
  const __m256 pinf = _mm256_set1_ps(std::numeric_limits<float>::infinity()), ninf = _mm256_sub_ps(_mm256_setzero_ps(), pinf);
  for (size_t q = 0; q < (n + 7) / 8; q++)
    for (size_t c = 0; c < F; c += 8) {
      size_t w = std::min<size_t>(8, F - c);
      __m256 r[8];
      load_columns8(x, n, F, q * 8, c, w, r);
      float* out = xt + q / 2 * 32 * F + q % 2 * 8 + c * 32;
      for (size_t k = 0; k < w; k++) {
        __m256 missing = _mm256_cmp_ps(r[k], r[k], _CMP_UNORD_Q);
        _mm256_storeu_ps(out + k * 32, _mm256_blendv_ps(r[k], pinf, missing));
        _mm256_storeu_ps(out + k * 32 + 16, _mm256_blendv_ps(r[k], ninf, missing));
      }
    }
}

template <int L>
LS_AVX2 void level_step8(const int32_t* feat, const float* thr, const float* const* xb, __m256i* pos,
                         __m256 (*turn)[kSelectLevels8]) {
  const int32_t* fl = feat + (1 << L) - 1;
  const float* tl = thr + (1 << L) - 1;
  for (size_t g = 0; g < kGroups; g++) {
    __m256 th, v;
    if constexpr (L <= kPickLevels8)
      th = pick8<L>(tl, pos[g]);
    else
      th = _mm256_i32gather_ps(tl, pos[g], 4);
    if constexpr (L < kSelectLevels8) {
      v = select_level8<L>(xb[g], fl, turn[g]);
    } else {
      __m256i f;
      if constexpr (L <= kPickLevels8)
        f = _mm256_castps_si256(pick8<L>(reinterpret_cast<const float*>(fl), pos[g]));
      else
        f = _mm256_i32gather_epi32(fl, pos[g], 4);
      v = _mm256_i32gather_ps(xb[g], _mm256_add_epi32(lanes8(), f), 4);
    }
    __m256 right = _mm256_cmp_ps(v, th, _CMP_NLT_UQ);
    if constexpr (L < kSelectLevels8) turn[g][L] = right;
    pos[g] = _mm256_sub_epi32(_mm256_add_epi32(pos[g], pos[g]), _mm256_castps_si256(right));
  }
}

// Groups g0 .. g0 + kGroups - 1 (those past `groups` repeat the last) through one tree of
// depth D; past 8 the levels are walked in a loop.
template <int D>
__attribute__((target("avx2"))) void walk_tree8(const int32_t* feat, const float* thr, const float* leaf,
                                                uint32_t depth, const float* xt, size_t F, size_t n, size_t g0,
                                                float* acc) {
  const size_t groups = (n + 7) / 8;
  const float* xb[kGroups];
  __m256i pos[kGroups];
  __m256 turn[kGroups][kSelectLevels8];
  for (size_t g = 0; g < kGroups; g++) {
    size_t q = std::min(g0 + g, groups - 1);
    xb[g] = xt + q / 2 * 32 * F + q % 2 * 8;
    pos[g] = _mm256_setzero_si256();
  }
  if constexpr (D > 0) level_step8<0>(feat, thr, xb, pos, turn);
  if constexpr (D > 1) level_step8<1>(feat, thr, xb, pos, turn);
  if constexpr (D > 2) level_step8<2>(feat, thr, xb, pos, turn);
  if constexpr (D > 3) level_step8<3>(feat, thr, xb, pos, turn);
  if constexpr (D > 4) level_step8<4>(feat, thr, xb, pos, turn);
  if constexpr (D > 5) level_step8<5>(feat, thr, xb, pos, turn);
  if constexpr (D > 6) level_step8<6>(feat, thr, xb, pos, turn);
  if constexpr (D > 7) level_step8<7>(feat, thr, xb, pos, turn);
  if constexpr (D > 8)
    for (uint32_t l = 8; l < depth; l++)
      for (size_t g = 0; g < kGroups; g++) {
        __m256i f = _mm256_i32gather_epi32(feat + (1u << l) - 1, pos[g], 4);
        __m256 th = _mm256_i32gather_ps(thr + (1u << l) - 1, pos[g], 4);
        __m256 v = _mm256_i32gather_ps(xb[g], _mm256_add_epi32(lanes8(), f), 4);
        __m256 right = _mm256_cmp_ps(v, th, _CMP_NLT_UQ);
        pos[g] = _mm256_sub_epi32(_mm256_add_epi32(pos[g], pos[g]), _mm256_castps_si256(right));
      }
  for (size_t g = 0; g < kGroups && g0 + g < groups; g++) {
    size_t i = (g0 + g) * 8;
    __m256 lv;
    if constexpr (D <= 6)
      lv = pick8<D>(leaf, pos[g]);
    else
      lv = _mm256_i32gather_ps(leaf, pos[g], 4);
    if (n - i >= 8) {
      _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), lv));
    } else {  // the same single addition per row as the vector path
      alignas(32) float v[8];
      _mm256_store_ps(v, lv);
      for (size_t j = 0; j < n - i; j++) acc[i + j] += v[j];
    }
  }
}
}  // namespace

__attribute__((target("avx2"))) void TreeModel::batch_avx2(const float* x, size_t n, float* margin, float* xt) const {
  const size_t F = num_features_, groups = (n + 7) / 8;
  fill_blocks8(x, n, F, xt);
  // Groups outermost, as in batch_avx512: their values stay in L1 across the trees.
  for (size_t g0 = 0; g0 < groups; g0 += kGroups)
    each_level_tree(n, margin, [&](auto D, const int32_t* feat, const float* thr, const float* leaf, uint32_t d,
                                   float* acc) { walk_tree8<D()>(feat, thr, leaf, d, xt, F, n, g0, acc); });
}
// The avx2bins kernel: batch_avx512_bins' walk with 32 vectors a block (one byte each in a
// 32-byte register). No mask registers: a turn is a byte compare's 0xFF lanes, and an
// unsigned x >= rank is max(x, rank) == x.
namespace {
// Search levels S .. M - 1 of a feature's tree (build_bins' layout) for 32 values, four
// registers of 8: pick8 reads entry j of level S in each lane.
template <int S, int M>
LS_AVX2 void search_bins8(const float* tab, const __m256* x, __m256i* j) {
  if constexpr (S < M) {
    for (int q = 0; q < 4; q++) {
      __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(x[q], pick8<S>(tab, j[q]), _CMP_GE_OQ));
      j[q] = _mm256_sub_epi32(_mm256_add_epi32(j[q], j[q]), ge);
    }
    search_bins8<S + 1, M>(tab + (S <= 4 ? 16 : 1 << S), x, j);
  }
}

// Four registers of 8 indices (< 256) → 32 bytes in lane order.
LS_AVX2 __m256i bytes_of(const __m256i* j) {
  __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(j[0], j[1]), _mm256_packus_epi32(j[2], j[3]));
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));  // undo the packs' interleave
}

// One feature's 32 values (col) → its two byte rows in the block.
template <int M>
__attribute__((target("avx2"))) void bin_feature8(const float* col, const float* tab, uint8_t* row_right,
                                                  uint8_t* row_left) {
  __m256 x[4];
  __m256i j[4], jr[4];
  for (int q = 0; q < 4; q++) {
    x[q] = _mm256_load_ps(col + 8 * q);
    j[q] = _mm256_setzero_si256();
  }
  search_bins8<0, M>(tab, x, j);
  for (int q = 0; q < 4; q++)  // missing values: left at 0 by the search
    jr[q] = _mm256_blendv_epi8(j[q], _mm256_set1_epi32(255), _mm256_castps_si256(_mm256_cmp_ps(x[q], x[q], _CMP_UNORD_Q)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_right), bytes_of(jr));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_left), bytes_of(j));
}

template <int W, int S, int K>
LS_AVX2 __m256i pick_bins8(const uint8_t* xb, const int32_t* fl, const __m256i* turn) {
  if constexpr (W == 1)
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 2 * size_t(fl[0])));  // rows of 32 bytes
  else
    return _mm256_blendv_epi8(pick_bins8<W / 2, 2 * S, K - 1>(xb, fl, turn),
                              pick_bins8<W / 2, 2 * S, K - 1>(xb, fl + S, turn), turn[K]);
}

// The level's ranks at each lane's position, as ranks_at; blendv reads each byte's top
// bit: pos's bit shifted there (16-bit shifts: no byte shift, and the bits crossing from
// the low byte land below the high byte's top bit).
template <int W>
LS_AVX2 __m256i ranks_at8(const uint8_t* rl, __m256i pos) {
  if constexpr (W <= 16) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rl))), pos);
  } else {
    constexpr int kShift = 7 - std::countr_zero(unsigned(W / 2));
    return _mm256_blendv_epi8(ranks_at8<W / 2>(rl, pos), ranks_at8<W / 2>(rl + W / 2, pos),
                              _mm256_slli_epi16(pos, kShift));
  }
}

template <int L, int D>
LS_AVX2 void bin_steps8(const int32_t* feat, const uint8_t* rank, const uint8_t* xb, __m256i& pos, __m256i* turn) {
  if constexpr (L < D) {
    const int32_t* fl = feat + (1 << L) - 1;
    __m256i th = ranks_at8<(1 << L)>(rank + (1 << L) - 1, pos);
    __m256i v = pick_bins8<1 << L, 1, L - 1>(xb, fl, turn);
    __m256i right = _mm256_cmpeq_epi8(_mm256_max_epu8(v, th), v);
    turn[L] = right;
    pos = _mm256_sub_epi8(_mm256_add_epi8(pos, pos), right);
    bin_steps8<L + 1, D>(feat, rank, xb, pos, turn);
  }
}

// Block b (32 vectors) through one tree of depth D.
template <int D>
LS_AVX2 void walk_block8(const int32_t* feat, const uint8_t* rank, const float* leaf, const uint8_t* xq, size_t F,
                         size_t n, size_t b, float* acc) {
  __m256i pos = _mm256_setzero_si256(), turn[kBinLevels];
  bin_steps8<0, D>(feat, rank, xq + b * 64 * F, pos, turn);
  const __m128i lo = _mm256_castsi256_si128(pos), hi = _mm256_extracti128_si256(pos, 1);
  const __m128i eighth[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int q = 0; q < 4; q++) {
    size_t i = b * 32 + size_t(q) * 8;
    if (i >= n) break;
    __m256i at = _mm256_cvtepu8_epi32(eighth[q]);
    __m256 lv;
    if constexpr (D <= 6)
      lv = pick8<D>(leaf, at);
    else
      lv = _mm256_i32gather_ps(leaf, at, 4);
    if (n - i >= 8) {
      _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), lv));
    } else {  // the same single addition per row as the vector path
      alignas(32) float v[8];
      _mm256_store_ps(v, lv);
      for (size_t k = 0; k < n - i; k++) acc[i + k] += v[k];
    }
  }
}
template <int D>
__attribute__((target("avx2"))) void walk_bins8(const int32_t* feat, const uint8_t* rank, const float* leaf,
                                                const uint8_t* xq, size_t F, size_t n, float* acc) {
  for (size_t b = 0; b < (n + 31) / 32; b++) walk_block8<D>(feat, rank, leaf, xq, F, n, b, acc);
}
}  // namespace

__attribute__((target("avx2"))) void TreeModel::batch_avx2_bins(const float* x, size_t n, float* margin,
                                                                uint8_t* xq) const {
  const size_t F = num_features_, blocks = (n + 31) / 32;
  alignas(32) float col[8][32];  // 8 features × the block's 32 vectors
  if (n % 32) std::memset(col, 0, sizeof col);  // groups past n: binned, never kept
  for (size_t b = 0; b < blocks; b++) {
    uint8_t* out = xq + b * 64 * F;
    size_t groups = std::min<size_t>(4, (n - b * 32 + 7) / 8);
    for (size_t c = 0; c < F; c += 8) {
      size_t w = std::min<size_t>(8, F - c);
      for (size_t q = 0; q < groups; q++) {  // lanes past n copy the last vector
        __m256 r[8];
        load_columns8(x, n, F, b * 32 + q * 8, c, w, r);
        for (size_t k = 0; k < w; k++) _mm256_store_ps(&col[k][8 * q], r[k]);
      }
      for (size_t k = 0; k < w; k++) {
        size_t f = c + k;
        if (bin_steps_[f] == 0 && f > 0) continue;  // no node reads it (fillers read feature 0)
        const float* tab = bin_tab_.data() + bin_tab_off_[f];
        uint8_t *right = out + 2 * f * 32, *left = right + 32;
        with_search_steps(bin_steps_[f], [&](auto M) { bin_feature8<M()>(col[k], tab, right, left); });
      }
    }
  }
  each_level_tree(n, margin, [&](auto D, const int32_t* feat, const float*, const float* leaf, uint32_t, float* acc) {
    const uint8_t* rank = lvl_bin_.data() + (feat - lvl_feat_.data());
    walk_bins8<std::min(D(), kBinLevels)>(feat, rank, leaf, xq, F, n, acc);  // bins: depth <= 8
  });
}
#pragma GCC diagnostic pop
#else
void TreeModel::batch_avx512(const float*, size_t, float*, float*) const {}
void TreeModel::batch_avx2(const float*, size_t, float*, float*) const {}
void TreeModel::batch_avx512_bins(const float*, size_t, float*, uint8_t*) const {}
void TreeModel::batch_avx2_bins(const float*, size_t, float*, uint8_t*) const {}
#endif

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
  if (engine_ != Engine::SCALAR) {
    float* scratch = margin + n * k;
    if (engine_ == Engine::QUICKSCORER) {  // masks aligned in the scratch (margin_floats leaves room)
      auto at = reinterpret_cast<uintptr_t>(scratch);
      batch_quickscorer(x, n, margin, reinterpret_cast<uint64_t*>((at + 7) & ~uintptr_t(7)));
    } else if (engine_ == Engine::AVX512BINS) {
      batch_avx512_bins(x, n, margin, reinterpret_cast<uint8_t*>(scratch));
    } else if (engine_ == Engine::AVX2BINS) {
      batch_avx2_bins(x, n, margin, reinterpret_cast<uint8_t*>(scratch));
    } else if (engine_ == Engine::AVX512) {
      batch_avx512(x, n, margin, scratch);
    } else {
      batch_avx2(x, n, margin, scratch);
    }
    float m[1024];
    for (size_t i = 0; i < n; i++) {
      for (uint32_t c = 0; c < k; c++) m[c] = margin[c * n + i];
      finish(m, out + i * outs);
    }
    return;
  }
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
