#include "dataplane/filter_jit.h"

#include <pcap/pcap.h>
#include <rte_bpf.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <vector>

namespace ls {

namespace {

constexpr unsigned kVerifyBudgetMs = 2000;

class BpfJit final : public FilterEngine {
 public:
  BpfJit(rte_bpf* bpf, uint64_t (*fn)(void*)) : bpf_(bpf), fn_(fn) {}
  ~BpfJit() override { rte_bpf_destroy(bpf_); }
  BpfJit(const BpfJit&) = delete;
  BpfJit& operator=(const BpfJit&) = delete;

  bool match(const PacketView& v) const override {
    // The program reads a frame through an mbuf: one segment over the captured bytes.
    // pkt_len == data_len, so a load past cap_len fails (verdict 0, as libpcap's) and
    // never follows `next`.
    rte_mbuf m;
    m.buf_addr = const_cast<uint8_t*>(v.data);
    m.data_off = 0;
    m.data_len = uint16_t(v.cap_len);  // PacketFilter::match: at most 65535
    m.pkt_len = m.data_len;
    m.nb_segs = 1;
    m.next = nullptr;
    return fn_(&m) != 0;
  }

 private:
  rte_bpf* bpf_;
  uint64_t (*fn_)(void*);
};

// Two faults of DPDK 22.11 (Debian's 22.11.11) are mended before the program is loaded:
// - rte_bpf_convert turns cBPF's indirect loads (ld [x + k]) into eBPF ones indexed by
//   A (R0) instead of X (R7): "tcp port 80" reads the wrong bytes. Every LD_IND takes
//   R7, the converter's X.
// - The x86 JIT encodes "test $imm, reg" (JSET with a constant) with a one-byte
//   immediate when the constant fits in one, a form x86's TEST does not have: the code
//   after it is decoded wrongly ("tcp[tcpflags] & tcp-syn != 0" crashed). Each JSET #k
//   becomes MOV32 R8, k; JSET R8. R8 is the converter's scratch register, live only
//   inside the sequences it emits, never across a JSET.
// Both are checked against libpcap's interpreter on every shared capture
// (tests/test_filter_jit.cpp).
std::vector<ebpf_insn> mend(const ebpf_insn* in, uint32_t n) {
  constexpr uint8_t kJsetK = BPF_JMP | BPF_JSET | BPF_K;
  std::vector<uint32_t> at(n);  // new index of old instruction i's first instruction
  uint32_t pos = 0;
  for (uint32_t i = 0; i < n; i++) {
    at[i] = pos;
    pos += in[i].code == kJsetK ? 2 : 1;
  }
  std::vector<ebpf_insn> out;
  out.reserve(pos);
  for (uint32_t i = 0; i < n; i++) {
    ebpf_insn x = in[i];
    if (BPF_CLASS(x.code) == BPF_LD && BPF_MODE(x.code) == BPF_IND) x.src_reg = EBPF_REG_7;
    if (x.code == kJsetK) {
      out.push_back(ebpf_insn{uint8_t(BPF_ALU | EBPF_MOV | BPF_K), EBPF_REG_8, 0, 0, x.imm});
      x.code = BPF_JMP | BPF_JSET | BPF_X;
      x.src_reg = EBPF_REG_8;
      x.imm = 0;
    }
    bool jumps = BPF_CLASS(x.code) == BPF_JMP && BPF_OP(x.code) != EBPF_EXIT && BPF_OP(x.code) != EBPF_CALL;
    if (jumps) {
      int64_t target = int64_t(i) + 1 + x.off;
      if (target < 0 || target >= int64_t(n)) return {};
      x.off = int16_t(int64_t(at[target]) - int64_t(out.size()) - 1);
    }
    out.push_back(x);
  }
  return out;
}

// DPDK 22.11's verifier walks the program's paths, and for some filters it does not
// finish: libpcap's code for "vlan 1 and tcp portrange 1-101 or vlan 2 and ..." with 13
// such clauses ran for minutes (5 s with 9), while 200 "host" clauses load in 1.5 s. The
// count of paths does not predict it (12 "ip6 host ... or tcp port ..." clauses have
// 2^62 and load in 0.4 s), so a forked child tries the load first, with a deadline: the
// control core never hangs in rte_bpf_load, and a filter too hard for the verifier runs
// in the interpreter. Only this thread exists in the child; it only loads and exits.
std::string trial_load(const rte_bpf_prm& p, unsigned budget_ms) {
  pid_t pid = fork();
  if (pid < 0) return std::string("could not fork to try DPDK's verifier: ") + std::strerror(errno);
  if (pid == 0) _exit(rte_bpf_load(&p) ? 0 : 1);
  int status = 0;
  for (unsigned waited = 0;; waited++) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return "";  // refused or not: the real load says why
    if (r < 0 && errno != EINTR) return std::string("lost DPDK's verifier child: ") + std::strerror(errno);
    if (waited >= budget_ms) break;
    usleep(1000);
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return "DPDK's verifier did not finish within " + std::to_string(budget_ms) +
         " ms (the expression has too many paths for it)";
}

std::string rte_why(const char* step) { return std::string(step) + ": " + rte_strerror(rte_errno); }

std::unique_ptr<FilterEngine> jit(const bpf_insn* insns, unsigned len, std::string& why) {
  bpf_program prog{len, const_cast<bpf_insn*>(insns)};
  rte_bpf_prm* prm = rte_bpf_convert(&prog);
  if (!prm) {
    why = rte_why("DPDK cannot convert the program to eBPF (rte_bpf_convert)");
    return nullptr;
  }
  std::vector<ebpf_insn> fixed = mend(prm->ins, prm->nb_ins);
  rte_bpf_prm p = *prm;
  rte_free(prm);
  if (fixed.empty()) {
    why = "the converted program jumps out of itself";
    return nullptr;
  }
  p.ins = fixed.data();
  p.nb_ins = uint32_t(fixed.size());
  if (std::string t = trial_load(p, kVerifyBudgetMs); !t.empty()) {
    why = t;
    return nullptr;
  }
  rte_bpf* bpf = rte_bpf_load(&p);  // verifies the program, copies the instructions
  if (!bpf) {
    why = rte_why("DPDK's verifier refused the program (rte_bpf_load)");
    return nullptr;
  }
  rte_bpf_jit j{};
  if (rte_bpf_get_jit(bpf, &j) != 0 || !j.func) {
    rte_bpf_destroy(bpf);
    why = "DPDK has no BPF JIT for this CPU";
    return nullptr;
  }
  return std::make_unique<BpfJit>(bpf, j.func);
}

}  // namespace

std::shared_ptr<const PacketFilter> compile_lcore_filter(const std::string& expression, std::string& why) {
  auto f = std::make_shared<PacketFilter>(expression);
  unsigned len;
  const bpf_insn* insns = f->program(LinkType::ETHERNET, len);
  why.clear();
  if (auto e = jit(insns, len, why)) f->set_ethernet_engine(std::move(e), "dpdk-bpf-jit");
  return f;
}

}  // namespace ls
