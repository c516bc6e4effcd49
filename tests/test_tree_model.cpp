// The batch kernel (AVX-512 where the CPU has it) against the one-vector walk: random
// XGBoost-shaped models of every depth the kernel handles, lopsided trees, several
// classes, and inputs with missing values, infinities and values equal to thresholds.
// Both add the same leaves in the same order, so results must be bit-identical; the
// one-vector walk is checked against XGBoost itself in tests/test_models.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "detect/tree_model.h"

using namespace ls;

namespace {

struct Gen {
  std::mt19937 r{3};
  std::vector<float> cuts = {-1.5f, -0.5f, 0.0f, 0.25f, 1.0f, 2.0f};  // shared, so inputs hit them exactly

  // One tree in XGBoost's arrays; leaves stop early at random so trees are lopsided.
  nlohmann::json tree(int depth, int features, float leaf_chance) {
    std::vector<int> l, rt, f, dl;
    std::vector<float> c;
    std::vector<int> node_depth{0};
    for (size_t i = 0; i < node_depth.size(); i++) {
      bool leaf = node_depth[i] == depth || (i > 0 && std::uniform_real_distribution<float>()(r) < leaf_chance);
      l.push_back(leaf ? -1 : int(node_depth.size()));
      rt.push_back(leaf ? -1 : int(node_depth.size()) + 1);
      f.push_back(leaf ? 0 : int(r() % unsigned(features)));
      dl.push_back(int(r() & 1));
      c.push_back(leaf ? std::normal_distribution<float>()(r) * 0.1f : cuts[r() % cuts.size()]);
      if (!leaf) {
        node_depth.push_back(node_depth[i] + 1);
        node_depth.push_back(node_depth[i] + 1);
      }
    }
    return {{"tree_param", {{"num_nodes", std::to_string(l.size())}}}, {"left_children", l},
            {"right_children", rt}, {"split_indices", f}, {"split_conditions", c}, {"default_left", dl}};
  }

  TreeModel model(int trees, int depth, int features, int classes, float leaf_chance,
                  const std::string& objective = "") {
    nlohmann::json ts = nlohmann::json::array(), info = nlohmann::json::array();
    for (int t = 0; t < trees; t++) {
      ts.push_back(tree(depth, features, leaf_chance));
      info.push_back(classes > 1 ? t % classes : 0);
    }
    std::string obj = !objective.empty() ? objective : classes > 1 ? "multi:softprob" : "binary:logistic";
    nlohmann::json param = {{"base_score", "5E-1"}, {"num_feature", std::to_string(features)}};
    if (classes > 1) param["num_class"] = std::to_string(classes);
    nlohmann::json m = {{"learner",
                         {{"learner_model_param", param},
                          {"objective", {{"name", obj}}},
                          {"gradient_booster", {{"name", "gbtree"}, {"model", {{"trees", ts}, {"tree_info", info}}}}}}}};
    return TreeModel::load_string(m.dump());
  }

  std::vector<float> inputs(size_t n, int features) {
    std::vector<float> x(n * size_t(features));
    const float inf = std::numeric_limits<float>::infinity();
    for (auto& v : x) {
      unsigned k = r() % 10;
      v = k == 0 ? std::nanf("") : k == 1 ? cuts[r() % cuts.size()] : k == 2 ? ((r() & 1) ? inf : -inf)
                                                                          : std::normal_distribution<float>()(r);
    }
    return x;
  }
};

// predict_batch == predict, bit for bit, for batch sizes around the 16-vector blocks.
void same_as_one_by_one(const TreeModel& m, Gen& g, const char* what) {
  int F = int(m.num_features());
  for (size_t n : {1u, 5u, 16u, 17u, 63u, 64u, 65u, 200u}) {
    auto x = g.inputs(n, F);
    std::vector<float> got(n * m.num_outputs()), want(m.num_outputs()), margin(m.margin_floats(n));
    m.predict_batch(x.data(), n, got.data(), margin.data());
    for (size_t i = 0; i < n; i++) {
      m.predict(x.data() + i * size_t(F), want.data());
      for (size_t o = 0; o < m.num_outputs(); o++)
        ASSERT_EQ(0, std::memcmp(&got[i * m.num_outputs() + o], &want[o], sizeof(float)))
            << what << ": vector " << i << " of " << n << " output " << o << ": batch " << got[i * m.num_outputs() + o]
            << " one-by-one " << want[o] << " (engine " << m.batch_engine() << ")";
    }
  }
}

}  // namespace

TEST(TreeModel, BatchEqualsOneByOneAtEveryDepth) {
  Gen g;
  for (int depth = 0; depth <= 10; depth++) {
    auto m = g.model(20, depth, 40, 1, 0.0f);
    same_as_one_by_one(m, g, ("full depth " + std::to_string(depth)).c_str());
  }
}

TEST(TreeModel, BatchEqualsOneByOneLopsidedAndFewFeatures) {
  Gen g;
  for (int features : {1, 3, 16, 17, 33}) {
    auto m = g.model(30, 7, features, 1, 0.3f);
    same_as_one_by_one(m, g, ("lopsided, features " + std::to_string(features)).c_str());
  }
}

TEST(TreeModel, BatchEqualsOneByOneMultiClass) {
  Gen g;
  same_as_one_by_one(g.model(24, 5, 12, 3, 0.2f), g, "softprob");
  same_as_one_by_one(g.model(24, 6, 12, 4, 0.1f, "multi:softmax"), g, "softmax");
  same_as_one_by_one(g.model(24, 6, 12, 1, 0.1f, "reg:squarederror"), g, "regression");
}

TEST(TreeModel, BatchEngineAndFallbacks) {
  Gen g;
  auto m = g.model(10, 6, 40, 1, 0.0f);
  if (__builtin_cpu_supports("avx512f") && !std::getenv("LINESIGHT_NO_AVX512"))
    EXPECT_STREQ("avx512", m.batch_engine());
  else
    EXPECT_STREQ("scalar", m.batch_engine());
  // Deeper than the kernel's limit: the scalar walk, same answers.
  auto deep = g.model(4, int(TreeModel::kMaxSimdDepth) + 2, 8, 1, 0.0f);
  EXPECT_STREQ("scalar", deep.batch_engine());
  same_as_one_by_one(deep, g, "too deep");
}

TEST(TreeModel, ThresholdBelowFloatRangeKeepsTheScalarWalk) {
  // -1e39 becomes -inf as a float: a missing value sent left as -inf would not be < -inf,
  // so the kernel's missing-value rows cannot express it; the model keeps the walk.
  nlohmann::json tree = {{"tree_param", {{"num_nodes", "3"}}}, {"left_children", {1, -1, -1}},
                         {"right_children", {2, -1, -1}}, {"split_indices", {0, 0, 0}},
                         {"split_conditions", {-1e39, 0.5, -0.5}}, {"default_left", {1, 0, 0}}};
  nlohmann::json j = {{"learner",
                       {{"learner_model_param", {{"base_score", "5E-1"}, {"num_feature", "2"}}},
                        {"objective", {{"name", "reg:squarederror"}}},
                        {"gradient_booster",
                         {{"name", "gbtree"}, {"model", {{"trees", {tree}}, {"tree_info", {0}}}}}}}}};
  auto m = TreeModel::load_string(j.dump());
  EXPECT_STREQ("scalar", m.batch_engine());
  float x[4] = {std::nanf(""), 0, 1, 0}, out[2], margin[128];
  ASSERT_LE(m.margin_floats(2), 128u);
  m.predict_batch(x, 2, out, margin);
  EXPECT_FLOAT_EQ(1.0f, out[0]);   // missing: default left → 0.5 + 0.5
  EXPECT_FLOAT_EQ(0.0f, out[1]);   // 1 < -inf is false: right → 0.5 - 0.5
}
