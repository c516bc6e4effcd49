// `linesight model check FILE` and `linesight model predict FILE [CSV]`: load an XGBoost
// JSON model as the detect stage will, and score feature vectors from a CSV (header
// optional; with one, columns are matched to the model's feature names; empty = missing).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "ctrl/commands.h"
#include "dataplane/text.h"
#include "detect/tree_model.h"

namespace ls {

namespace {

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> v;
  size_t a = 0;
  for (;;) {
    size_t b = line.find(',', a);
    v.push_back(line.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) return v;
    a = b + 1;
  }
}

bool parse_float(const std::string& s, float& out) {
  std::string t(trim(s));
  if (t.empty() || t == "nan" || t == "NaN") {
    out = std::nanf("");
    return true;
  }
  try {
    size_t used = 0;
    out = std::stof(t, &used);
    return used == t.size();
  } catch (const std::exception&) {
    return false;
  }
}

int predict(const TreeModel& m, std::istream& in, const std::string& src) {
  std::string line;
  std::vector<int> col_of;  // model feature → CSV column (-1: missing)
  std::vector<float> x(m.num_features());
  size_t lineno = 0;
  // Scored kBatch rows at a time through the batch kernel the detect stage's benchmarks use.
  constexpr size_t kBatch = 256;
  std::vector<float> rows, out(kBatch * m.num_outputs()), margin(m.margin_floats(kBatch));
  rows.reserve(kBatch * x.size());
  std::string o;
  auto flush = [&] {
    size_t n = rows.size() / x.size();
    if (n == 0) return;
    m.predict_batch(rows.data(), n, out.data(), margin.data());
    o.clear();
    for (size_t i = 0; i < n; i++)
      for (size_t k = 0; k < m.num_outputs(); k++) {
        char b[32];
        std::snprintf(b, sizeof b, "%s%.9g", k ? " " : "", double(out[i * m.num_outputs() + k]));
        o += b;
        if (k + 1 == m.num_outputs()) o += '\n';
      }
    std::fputs(o.c_str(), stdout);
    rows.clear();
  };
  while (std::getline(in, line)) {
    lineno++;
    if (line.empty() || line[0] == '#') continue;
    auto cells = split_csv(line);
    float probe;
    if (col_of.empty() && !parse_float(cells[0], probe)) {  // a header
      col_of.assign(m.num_features(), -1);
      const auto& names = m.feature_names();
      for (uint32_t f = 0; f < m.num_features(); f++) {
        std::string want = "f";  // XGBoost's name for an unnamed feature
        if (f < names.size() && !names[f].empty()) want = names[f];
        else want += std::to_string(f);
        for (size_t c = 0; c < cells.size(); c++)
          if (trim(cells[c]) == want) col_of[f] = int(c);
        if (col_of[f] < 0) std::fprintf(stderr, "linesight: %s: no column '%s': treated as missing\n", src.c_str(), want.c_str());
      }
      continue;
    }
    if (col_of.empty())
      for (uint32_t f = 0; f < m.num_features(); f++) col_of.push_back(f < cells.size() ? int(f) : -1);
    for (uint32_t f = 0; f < m.num_features(); f++) {
      int c = col_of[f];
      if (c < 0 || size_t(c) >= cells.size()) {
        x[f] = std::nanf("");
      } else if (!parse_float(cells[size_t(c)], x[f])) {
        std::fprintf(stderr, "linesight: %s:%zu: column %d: '%s' is not a number\n", src.c_str(), lineno, c + 1,
                     cells[size_t(c)].c_str());
        flush();  // the rows before it are answered, as they were read
        return 1;
      }
    }
    rows.insert(rows.end(), x.begin(), x.end());
    if (rows.size() == kBatch * x.size()) flush();
  }
  flush();
  return 0;
}

}  // namespace

int cmd_model(int argc, char** argv) {
  const char* usage =
      "usage: linesight model check MODEL.json\n"
      "       linesight model predict MODEL.json [FEATURES.csv]   (stdin without a file)\n";
  if (argc < 2 || (std::string(argv[0]) != "check" && std::string(argv[0]) != "predict")) {
    std::fputs(usage, stderr);
    return 2;
  }
  try {
    TreeModel m = TreeModel::load_file(argv[1]);
    if (std::string(argv[0]) == "check") {
      std::printf("%s: %s, %zu trees, %zu nodes (%zu KB compiled), %u features, %u output%s, batch engine %s\n",
                  argv[1], m.objective().c_str(), m.num_trees(), m.nodes(), m.nodes() * 12 / 1024, m.num_features(),
                  m.num_outputs(), m.num_outputs() == 1 ? "" : "s", m.batch_engine());
      return 0;
    }
    if (argc >= 3) {
      std::ifstream f(argv[2]);
      if (!f) {
        std::fprintf(stderr, "linesight: %s: cannot open\n", argv[2]);
        return 2;
      }
      return predict(m, f, argv[2]);
    }
    return predict(m, std::cin, "stdin");
  } catch (const ModelError& e) {
    std::fprintf(stderr, "linesight: %s\n", e.what());
    return 2;
  }
}

}  // namespace ls
