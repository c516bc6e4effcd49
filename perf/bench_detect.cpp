// Tree-ensemble engine: ns per prediction for 100 trees of depth 6 and 500 of depth 8,
// one vector at a time (predict: the scalar walk) and in batches (predict_batch: the best
// kernel the CPU runs, named in each batch row's label; LINESIGHT_BATCH_ENGINE=avx2 or
// =scalar caps it, =quickscorer selects that layout).
// Models are random full trees over 40 features, loaded through the same JSON path as
// XGBoost's files; 10 % of values missing. BM_PredictBatchGrown: trees grown leaf-wise
// to 64 leaves (XGBoost's lossguide policy), deep and lopsided. BM_PredictBatch/1/1/256 is the fixed cost
// per vector (regrouping the batch, the sigmoid); BM_Shipped* score the shipped
// c2-server model (XGBoost-trained: lopsided trees) on the same vectors; BM_PredictBatchHist
// the full trees with thresholds on 255 cut points per feature (XGBoost hist).
#include <benchmark/benchmark.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "detect/tree_model.h"

namespace {

constexpr int kFeatures = 40;

// Trees as XGBoost JSON: `grow` shapes each tree (left/right child, -1 for a leaf); splits
// get a random feature, threshold and default direction, leaves a small value. With
// `cuts`, thresholds are one of 255 cut points per feature, as XGBoost's hist method
// (max_bin 256) makes them; else any value.
template <class Grow>
ls::TreeModel model_of(int trees, Grow&& grow, bool cuts = false) {
  std::mt19937 r(11);
  std::normal_distribution<float> g;
  nlohmann::json ts = nlohmann::json::array(), info = nlohmann::json::array();
  for (int t = 0; t < trees; t++) {
    std::vector<int> l, rt;
    grow(r, l, rt);
    size_t n = l.size();
    std::vector<int> f(n, 0), dl(n, 0);
    std::vector<float> c(n);
    for (size_t i = 0; i < n; i++) {
      if (l[i] >= 0) {
        f[i] = int(r() % kFeatures);
        dl[i] = int(r() & 1);
        c[i] = cuts ? -3.0f + 6.0f * float(1 + r() % 255) / 256.0f : g(r);
      } else {
        c[i] = g(r) * 0.1f;
      }
    }
    ts.push_back({{"tree_param", {{"num_nodes", std::to_string(n)}}}, {"left_children", l},
                  {"right_children", rt}, {"split_indices", f}, {"split_conditions", c}, {"default_left", dl}});
    info.push_back(0);
  }
  nlohmann::json m = {{"learner",
                       {{"learner_model_param", {{"base_score", "5E-1"}, {"num_feature", std::to_string(kFeatures)}}},
                        {"objective", {{"name", "binary:logistic"}}},
                        {"gradient_booster", {{"name", "gbtree"}, {"model", {{"trees", ts}, {"tree_info", info}}}}}}}};
  return ls::TreeModel::load_string(m.dump());
}

// Full trees of one depth (XGBoost's default depth-wise growth at its limit).
ls::TreeModel random_model(int trees, int depth, bool cuts = false) {
  return model_of(
      trees,
      [&](std::mt19937&, std::vector<int>& l, std::vector<int>& rt) {
        int n = (1 << (depth + 1)) - 1;
        l.assign(n, -1);
        rt.assign(n, -1);
        for (int i = 0; 2 * i + 2 < n; i++) l[i] = 2 * i + 1, rt[i] = 2 * i + 2;
      },
      cuts);
}

// Leaf-wise growth (grow_policy=lossguide, max_leaves): a random leaf split until the tree
// has `leaves`; deep and lopsided, often past the SIMD kernels' depth 10.
ls::TreeModel grown_model(int trees, int leaves) {
  return model_of(trees, [&](std::mt19937& r, std::vector<int>& l, std::vector<int>& rt) {
    l.assign(1, -1);
    rt.assign(1, -1);
    std::vector<int> open{0};
    while (int(open.size()) < leaves) {
      size_t k = r() % open.size();
      int at = open[k], n = int(l.size());
      l[size_t(at)] = n;
      rt[size_t(at)] = n + 1;
      l.resize(size_t(n) + 2, -1);
      rt.resize(size_t(n) + 2, -1);
      open[k] = n;
      open.push_back(n + 1);
    }
  });
}

std::vector<float> vectors(size_t n) {
  std::mt19937 r(5);
  std::normal_distribution<float> g;
  std::vector<float> x(n * kFeatures);
  for (auto& v : x) v = (r() % 10 == 0) ? std::nanf("") : g(r);
  return x;
}

void BM_PredictOne(benchmark::State& st) {
  auto m = random_model(int(st.range(0)), int(st.range(1)));
  constexpr size_t kN = 4096;
  auto x = vectors(kN);
  float out;
  size_t i = 0;
  for (auto _ : st) {
    m.predict(&x[(i++ % kN) * kFeatures], &out);
    benchmark::DoNotOptimize(out);
  }
  st.SetItemsProcessed(int64_t(st.iterations()));
}

std::vector<float> vectors_for(const ls::TreeModel& m, size_t n) {
  auto x = vectors(n * m.num_features() / kFeatures + 1);
  x.resize(n * m.num_features());
  return x;
}

// Batches of `batch` vectors through predict_batch, labelled with the engine used.
void run_batches(benchmark::State& st, const ls::TreeModel& m, size_t batch) {
  auto x = vectors_for(m, batch);
  std::vector<float> out(batch * m.num_outputs()), margin(m.margin_floats(batch));
  for (auto _ : st) {
    m.predict_batch(x.data(), batch, out.data(), margin.data());
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(int64_t(st.iterations() * batch));
  st.SetLabel(m.batch_engine());
}

void BM_PredictBatch(benchmark::State& st) {
  run_batches(st, random_model(int(st.range(0)), int(st.range(1))), size_t(st.range(2)));
}

// The same full trees with hist-like thresholds: 500 × depth 8 fits the bins kernels.
void BM_PredictBatchHist(benchmark::State& st) {
  run_batches(st, random_model(int(st.range(0)), int(st.range(1)), true), size_t(st.range(2)));
}

void BM_PredictBatchGrown(benchmark::State& st) {
  run_batches(st, grown_model(int(st.range(0)), int(st.range(1))), size_t(st.range(2)));
}

void BM_ShippedOne(benchmark::State& st) {
  auto m = ls::TreeModel::load_file(LS_SOURCE_ROOT "/detect/models/c2-server.json");
  constexpr size_t kN = 4096;
  auto x = vectors_for(m, kN);
  float out;
  size_t i = 0;
  for (auto _ : st) {
    m.predict(&x[(i++ % kN) * m.num_features()], &out);
    benchmark::DoNotOptimize(out);
  }
  st.SetItemsProcessed(int64_t(st.iterations()));
}

void BM_ShippedBatch(benchmark::State& st) {
  run_batches(st, ls::TreeModel::load_file(LS_SOURCE_ROOT "/detect/models/c2-server.json"), size_t(st.range(0)));
}

}  // namespace

BENCHMARK(BM_ShippedOne);
BENCHMARK(BM_ShippedBatch)->Arg(8)->Arg(16)->Arg(32)->Arg(64)->Arg(256);
BENCHMARK(BM_PredictOne)->Args({100, 6})->Args({500, 8});
BENCHMARK(BM_PredictBatchGrown)->Args({100, 64, 256});
BENCHMARK(BM_PredictBatchHist)->Args({100, 6, 256})->Args({500, 8, 64})->Args({500, 8, 256});
BENCHMARK(BM_PredictBatch)->Args({1, 1, 256})->Args({100, 6, 16})->Args({100, 6, 32})->Args({100, 6, 64})->Args({100, 6, 256})->Args({500, 8, 64})->Args({500, 8, 256});
BENCHMARK_MAIN();
