// Assessment report (`linesight report`): what our detections add to the threat intel an
// operator already has. From detection records (JSON lines, or a sensor's indicators.json)
// and a set of feeds (features/ti_table.h formats, dated snapshots) it counts the server
// addresses we reported, those unknown to every feed (and to a partner), those we saw
// before any feed listed them, the overlap with each feed, the ports we observed that the
// feeds did not name, and the reliability of what only we report (docs/ti.md).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "features/ti_table.h"

namespace ls {

struct ReportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One server address as our detections saw it.
struct Sighting {
  uint8_t addr[16] = {};
  uint8_t ver = 4;
  uint64_t first_ns = UINT64_MAX, last_ns = 0, detections = 0;
  double score = 0;
  std::set<std::string> apps;
  std::set<uint32_t> ports;  // port << 8 | protocol
};

struct Sightings {
  std::map<std::string, Sighting> by_ip;
  uint64_t records = 0, not_server = 0, not_public = 0, malformed = 0;
  std::string first_malformed;  // "file:line: what"
};

// Reads detection JSON lines (`--detections-out`) or indicators.json exports from files
// or directories (recursively: .jsonl .json .ndjson). Only server-entity detections of
// public addresses count (the rest is counted). `apps` non-empty: only those apps.
// Throws ReportError naming an unreadable path.
Sightings read_sightings(const std::vector<std::string>& paths, const std::set<std::string>& apps = {});

struct FeedOverlap {
  std::string name, category;
  uint64_t listings = 0;    // entries over every snapshot of the feed
  uint32_t snapshots = 0;   // distinct dates (0: undated)
  uint32_t ours = 0;        // of our reported addresses, how many it lists
  int64_t first_day = 0;    // its earliest dated listing of one of ours (0: none dated)
};

struct ReportRow {  // one reported address
  std::string ip;
  const Sighting* s = nullptr;
  std::vector<std::string> feeds;   // distinct feed names listing it
  bool partner = false;             // the partner lists it
  int64_t first_listed_day = 0;     // earliest dated listing by any feed (0: none)
  std::set<uint32_t> feed_ports;    // ports the feeds name for it
  std::vector<uint32_t> new_ports;  // ours, not named by any feed (port << 8 | proto)
  double reliability = 0;
};

struct Report {
  Report() = default;
  Report(Report&&) = default;  // rows point into `in`'s map nodes: moving keeps them,
  Report(const Report&) = delete;  // a copy would not
  Sightings in;
  std::vector<ReportRow> rows;      // by address
  std::vector<FeedOverlap> feeds;   // every feed name, most overlap first
  size_t feed_instances = 0, feed_names = 0;
  bool has_partner = false;
  size_t reported = 0, listed = 0, unknown_feeds = 0, unknown_all = 0, partner_listed = 0;
  size_t ahead = 0, undated = 0;    // of listed: seen before every dated listing / no dated listing
  std::vector<int64_t> lead_days;   // per `ahead` address: days before the first listing
  double mean_feeds_per_listed = 0;
  size_t new_port_pairs = 0, new_port_servers = 0;
  int64_t now_day = 0;              // reliability is judged on this day
  // Reliability of the addresses only we report: 5 buckets of 0.2.
  size_t unique_reliability[5] = {};
};

// `at_day` 0: judge each server's reliability at its last sighting, as the sensor's export
// did then (a replay of an old capture is judged at its own time); else on that day.
// Feed listings dated after that day are not evidence yet.
Report build_report(Sightings in, const TiTable& feeds, const TiTable* partner, int64_t at_day = 0);

std::string report_table(const Report& r, size_t top);
std::string report_json(const Report& r);

}  // namespace ls
