// SpoolFile: a stalled reader or a full disk spools lines, in order, and recovery writes
// them out; what cannot be written is reported at close, never lost silently.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "dataplane/output_file.h"

using ls::SpoolFile;

namespace {
std::string drain_fd(int fd) {
  std::string got;
  char b[65536];
  for (ssize_t n; (n = ::read(fd, b, sizeof b)) > 0;) got.append(b, size_t(n));
  return got;
}
}  // namespace

TEST(SpoolFile, StalledFifoReaderSpoolsThenRecoversInOrder) {
  auto dir = std::filesystem::temp_directory_path() / ("ls-spool-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string fifo = (dir / "det.fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  std::string want;
  {
    SpoolFile f(fifo);
    for (int i = 0; i < 4000; i++) {  // ≈ 200 KB: three times a pipe's 64 KB
      std::string line = "{\"detection\":" + std::to_string(i) + ",\"pad\":\"" + std::string(30, 'x') + "\"}\n";
      want += line;
      f.write(line);
    }
    f.tick();
    EXPECT_GT(f.spooled(), 100000u) << "the reader stalled: the rest waits in the spool";
    EXPECT_GT(f.stats().write_errors, 0u);
    EXPECT_EQ(f.stats().last_errno, EAGAIN);
    std::string got = drain_fd(rd);
    for (int i = 0; i < 20 && f.spooled(); i++) {
      f.tick();
      got += drain_fd(rd);
    }
    EXPECT_EQ(f.spooled(), 0u) << "recovered when the reader came back";
    EXPECT_NO_THROW(f.close());
    got += drain_fd(rd);
    EXPECT_EQ(got, want) << "every byte, in order";
    EXPECT_EQ(f.stats().lines, 4000u);
    EXPECT_EQ(f.stats().dropped_lines, 0u);
  }
  ::close(rd);
  std::filesystem::remove_all(dir);
}

TEST(SpoolFile, FullDiskIsReportedAtClose) {
  SpoolFile f("/dev/full");
  f.write("{\"a\":1}\n");
  f.tick();
  EXPECT_EQ(f.stats().last_errno, ENOSPC);
  EXPECT_EQ(f.spooled(), 8u);
  try {
    f.close();
    FAIL() << "close must report bytes that never reached /dev/full";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("8 bytes still spooled"), std::string::npos) << e.what();
  }
}

TEST(SpoolFile, FullSpoolDropsNewLinesAndCountsThem) {
  SpoolFile f("/dev/full", 100);
  for (int i = 0; i < 10; i++) f.write("0123456789012345678901234567\n");  // 29 B each
  f.tick();
  EXPECT_EQ(f.stats().lines, 3u);
  EXPECT_EQ(f.stats().dropped_lines, 7u);
  EXPECT_THROW(f.close(), std::runtime_error);
}

TEST(SpoolFile, UnopenableFileIsNamed) {
  try {
    SpoolFile f("/nonexistent-dir/det.jsonl");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/det.jsonl"), std::string::npos);
  }
}

// write_replacing: the file is replaced whole or left as it was, never half written, and
// no PATH.tmp stays behind.
TEST(WriteReplacing, WholeOrNothing) {
  auto dir = std::filesystem::temp_directory_path() / ("ls-wr-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "out.jsonl").string();
  auto read_all = [&] {
    std::string s;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      char b[256];
      for (size_t n; (n = std::fread(b, 1, sizeof b, f)) > 0;) s.append(b, n);
      std::fclose(f);
    }
    return s;
  };
  ls::write_replacing(path, [](FILE* f) { return std::fputs("old\n", f) >= 0; });
  EXPECT_EQ(read_all(), "old\n");
  // A body that fails half-way: the old file stays, the error names the target.
  try {
    ls::write_replacing(path, [](FILE* f) {
      std::fputs("half", f);
      errno = ENOSPC;
      return false;
    });
    FAIL() << "a failed body must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::strerror(ENOSPC)), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_all(), "old\n");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  ls::write_replacing(path, [](FILE* f) { return std::fputs("new\n", f) >= 0; });
  EXPECT_EQ(read_all(), "new\n");
  EXPECT_NO_THROW(ls::check_replaceable(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THROW(ls::check_replaceable((dir / "no-such-dir" / "x").string()), std::runtime_error);
  std::filesystem::remove_all(dir);
}
