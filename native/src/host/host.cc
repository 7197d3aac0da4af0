// The micro-VM process. One thread (this one) runs an epoll loop over the control and serial sockets, an
// eventfd and a signalfd; vCPU threads (vstate/vm.cc) and the snapshot writer never touch a socket or a file
// of ours: they append to a mutex-guarded mailbox and poke the eventfd, as addon.cc hands events to JS.
//
// Lifecycle: check the files and lock the disks, build the VM, listen, write the runtime record, start the
// vCPUs, tell the parent on --ready-fd. When the guest ends (guest power-off, crash, a stop we asked for):
// write logs/last-exit.json durably, send the exit event, flush, remove the sockets, exit 0. The runtime
// record stays: a daemon that missed the exit finds it, sees the process gone and reads the exit record.
#include "host/host.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include "common.h"
#include "host/control.h"
#include "host/files.h"
#include "host/json.h"
#include "vstate/vm.h"

namespace vmdesk {
namespace host {

namespace {

constexpr size_t kMaxControlClients = 4;
// Unread output a client may leave with us before it is dropped: a daemon that stops reading must not make
// this process grow. Serial output is in serial.log anyway; a dropped client reconnects and replays it.
constexpr size_t kControlOutCap = 1u << 20;
constexpr size_t kSerialOutCap = 4u << 20;
// Guest output waiting for this thread; past it output is counted and dropped (never blocks a vCPU).
constexpr size_t kMailboxSerialCap = 4u << 20;
constexpr uint64_t kSerialLogRotateBytes = 64ull << 20;
constexpr uint64_t kStopGraceMs = 5000;  // vCPUs that ignore a stop request this long are ended with the process
constexpr int kExitFlushMs = 1000;
constexpr size_t kReadChunk = 4096;
constexpr int kReadsPerEvent = 16;

// Fixed epoll tags; clients use their serial number (from kFirstClientTag on).
constexpr uint64_t kTagNotify = 1, kTagSignal = 2, kTagControl = 3, kTagSerial = 4, kFirstClientTag = 16;

uint64_t nowMs() { return monotonicNanos() / 1000000; }

void logLine(const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::string line = isoNow() + " vmdesk-microvm[" + std::to_string(getpid()) + "]: " + msg + "\n";
  ssize_t n = ::write(2, line.data(), line.size());
  (void)n;
}

// What the vCPU threads and the snapshot writer hand to the loop.
struct Mailbox {
  std::mutex mu;
  std::string serial;
  uint64_t dropped = 0;
  bool notified = false;
  struct Exit {
    uint64_t generation;
    ExitInfo info;
  };
  std::vector<Exit> exits;
  bool serialSpace = false;
  bool snapshotDone = false;
  uint64_t snapshotBytes = 0;
  std::string snapshotCode, snapshotMessage;
  int eventFd = -1;
  // Caller holds mu. One eventfd write per batch: the UART hands over output a byte at a time.
  void notifyLocked() {
    if (notified) return;
    notified = true;
    uint64_t one = 1;
    ssize_t n = ::write(eventFd, &one, sizeof one);
    (void)n;
  }
};

struct Client {
  uint64_t tag = 0;
  Fd fd;
  bool serial = false;
  bool closing = false;
  bool eof = false;  // the peer finished sending: answer what it asked, then close
  bool inputPaused = false;  // serial: the guest's input FIFO is full; the socket is not read meanwhile
  uint32_t events = 0;       // what epoll watches for it now
  LineReader reader;
  std::string out;
  size_t outOff = 0;
  size_t pending() const { return out.size() - outOff; }
};

enum class Stop { None, Shutdown, ShutdownForced, Kill, Quit, Signal };

VmError openError(const std::string& what, const std::string& path, int err) {
  if (err == ENOENT) return invalid(what + " " + path + " does not exist");
  if (err == EACCES || err == EPERM || err == EROFS) return VmError("EACCES", what + " " + path + ": " + std::strerror(err));
  return VmError("EINVAL", what + " " + path + ": " + std::strerror(err));
}

void checkReadable(const std::string& what, const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw openError(what, path, errno);
  struct stat st;
  if (fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) throw invalid(what + " " + path + " is a directory");
}

// A unix socket at path, mode 0600. A live socket there means another process serves this VM: refused.
// Anything there that is not a socket is not ours to delete.
Fd listenUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw invalid("socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw invalid(path + " exists and is not a socket");
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      throw VmError("ESTATE", "another process is serving " + path + " (is this micro-VM already running?)");
    }
    ::unlink(path.c_str());
  }
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw sysError("socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw sysError("bind " + path);
  if (::chmod(path.c_str(), 0600) != 0) {
    ::unlink(path.c_str());
    throw sysError("chmod " + path);
  }
  if (::listen(fd.get(), 8) != 0) {
    ::unlink(path.c_str());
    throw sysError("listen " + path);
  }
  return fd;
}

class Host {
 public:
  explicit Host(const HostArgs& a) : a_(a) {}
  int run();

 private:
  void setUp();
  void lockDisks();
  VmCallbacks callbacks(uint64_t generation);
  std::unique_ptr<Vm> bootVm();
  std::unique_ptr<Vm> restoreVm(const std::string& path);
  void openSerialLog();
  void writeRuntimeRecord();
  void notifyReady(const std::string& line);
  void cleanUpFailedStart();

  void loop();
  int timeoutMs() const;
  void checkDeadlines();
  void onNotify();
  void onSignal();
  void acceptClient(bool serial);
  void onClientEvent(Client& c, uint32_t events);
  void readControl(Client& c);
  void readSerial(Client& c);
  void handle(Client& c, const Request& r);
  void execute(Client& c, const Request& r);
  void send(Client& c, const std::string& data);
  void flush(Client& c);
  void drop(Client& c, const char* why);
  void sweepClients();
  void broadcast(const std::string& line);
  void setState(const char* s);
  void deliverSerial(const std::string& data);
  void feedSerialInput();
  void updateEvents(Client& c);
  void rotateSerialLog();

  void requireGuest(bool allowDuringSnapshot = false) const;
  void requestStop(Stop kind, const std::string& detail);
  void replaceGuest(std::unique_ptr<Vm> next, bool paused);
  void startSnapshot(Client& c, const Request& r);
  void finishSnapshot();
  void onGuestExit(const ExitInfo& info);
  ExitRecordData classify(const ExitInfo& info) const;
  void finish(const ExitRecordData& rec);
  void flushAll(int budgetMs);
  std::string infoJson() const;
  std::string stateJson() const { return JsonObject().str("state", state_).done(); }

  const HostArgs& a_;
  Mailbox box_;  // declared before vm_: the VM's threads post here until it is destroyed
  Fd epoll_, eventFd_, signalFd_, controlListen_, serialListen_, serialLog_;
  std::vector<Fd> diskLocks_;
  std::unique_ptr<Vm> vm_;
  uint64_t generation_ = 0;  // which VM's exits count: a replaced guest's do not
  const char* state_ = "running";
  std::map<uint64_t, std::unique_ptr<Client>> clients_;
  uint64_t nextTag_ = kFirstClientTag;
  uint64_t serialClient_ = 0;
  std::string serialInputPending_;  // what the guest's full input FIFO refused, at most one read's worth
  OutputTail tail_;
  uint64_t serialLogBytes_ = 0;
  uint64_t serialLogStart_ = 0;  // where this run's output begins in the serial log (it is appended across runs)
  bool serialLogFailed_ = false;
  uint64_t droppedSerial_ = 0;
  Stop stop_ = Stop::None;
  std::string stopDetail_;
  uint64_t shutdownDeadline_ = 0;
  uint64_t stopDeadline_ = 0;
  std::string startedAt_, startTime_;
  // What a failed start removes again: only what it made (a live socket of another process stays).
  bool createdControl_ = false, createdSerial_ = false, wroteRecord_ = false;
  std::thread snapshotThread_;
  bool snapshotActive_ = false;
  uint64_t snapshotClient_ = 0, snapshotRequest_ = 0, snapshotStart_ = 0;
  std::string snapshotPath_;
  bool finished_ = false;
};

int Host::run() {
  startedAt_ = isoNow();
  startTime_ = processStartTime(getpid());
  ::umask(077);
  signal(SIGPIPE, SIG_IGN);
  if (::chdir("/") != 0) { /* paths are absolute; staying elsewhere only pins a directory */ }
  // Blocked before any thread exists, so every vCPU thread inherits the mask and only the signalfd sees them.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGTERM);
  sigaddset(&stopSignals, SIGINT);
  sigaddset(&stopSignals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  try {
    if (a_.readyFd >= 0) {
      if (fcntl(a_.readyFd, F_SETFD, FD_CLOEXEC) != 0) throw invalid("--ready-fd " + std::to_string(a_.readyFd) + " is not an open file descriptor");
    }
    signalFd_.reset(signalfd(-1, &stopSignals, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signalFd_.valid()) throw sysError("signalfd");
    setUp();
  } catch (const std::exception& e) {
    auto* ve = dynamic_cast<const VmError*>(&e);
    std::string code = ve ? ve->code : "EENGINE";
    logLine("the micro-VM did not start: %s: %s", code.c_str(), e.what());
    cleanUpFailedStart();
    std::string err = JsonObject().str("code", code).str("message", e.what()).done();
    notifyReady(JsonObject().boolean("ok", false).raw("error", err).done());
    return exitStatusFor(code);
  }
  notifyReady(JsonObject().boolean("ok", true).num("pid", uint64_t(getpid())).str("startTime", startTime_).str("state", state_).done());
  logLine("running: %u vCPUs, %llu MiB, %s", vm_->cpus(), (unsigned long long)(vm_->memBytes() >> 20), state_);
  loop();
  return 0;
}

void Host::setUp() {
  // Everything that can be checked without KVM first: a missing kernel or a disk another VM holds is an
  // EINVAL/EBUSY with the file's name, not an obscure failure half-way through building the VM.
  if (!a_.kernel.empty()) checkReadable("kernel", a_.kernel);
  if (!a_.initrd.empty()) checkReadable("initrd", a_.initrd);
  if (!a_.restore.empty()) checkReadable("snapshot", a_.restore);
  lockDisks();
  openSerialLog();
  serialLogStart_ = serialLogBytes_;
  eventFd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!eventFd_.valid()) throw sysError("eventfd");
  box_.eventFd = eventFd_.get();

  vm_ = a_.restore.empty() ? bootVm() : restoreVm(a_.restore);
  generation_++;

  controlListen_ = listenUnix(a_.control);
  createdControl_ = true;
  serialListen_ = listenUnix(a_.serial);
  createdSerial_ = true;
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) throw sysError("epoll_create1");
  const std::pair<int, uint64_t> watched[] = {
      {eventFd_.get(), kTagNotify}, {signalFd_.get(), kTagSignal}, {controlListen_.get(), kTagControl}, {serialListen_.get(), kTagSerial}};
  for (auto& [fd, tag] : watched) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw sysError("epoll_ctl");
  }
  writeRuntimeRecord();
  vm_->start(a_.paused);
  state_ = a_.paused ? "paused" : "running";
}

// flock(2) on every disk, like QEMU's image locking: one writer, or any number of readers. The kernel drops
// the locks with the process however it ends; the daemon's DiskProvider.checkFree asks the same question.
void Host::lockDisks() {
  for (const DiskConfig& d : a_.disks) {
    Fd fd(::open(d.path.c_str(), (d.readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd.valid()) throw openError("disk image", d.path, errno);
    int rc;
    do rc = flock(fd.get(), (d.readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK) throw VmError("EBUSY", "disk image " + d.path + " is in use by another process (a running VM?)");
      throw sysError("lock disk image " + d.path);
    }
    diskLocks_.push_back(std::move(fd));
  }
}

VmCallbacks Host::callbacks(uint64_t generation) {
  Mailbox* box = &box_;
  VmCallbacks cb;
  cb.serial = [box](const uint8_t* d, size_t n) {
    std::lock_guard<std::mutex> g(box->mu);
    if (box->serial.size() + n > kMailboxSerialCap) box->dropped += n;
    else box->serial.append(reinterpret_cast<const char*>(d), n);
    box->notifyLocked();
  };
  cb.exit = [box, generation](const ExitInfo& e) {
    std::lock_guard<std::mutex> g(box->mu);
    box->exits.push_back({generation, e});
    box->notifyLocked();
  };
  cb.serialSpace = [box] {
    std::lock_guard<std::mutex> g(box->mu);
    box->serialSpace = true;
    box->notifyLocked();
  };
  return cb;
}

std::unique_ptr<Vm> Host::bootVm() {
  if (a_.kernel.empty()) throw VmError("ESTATE", "this micro-VM was started from a snapshot without --kernel: there is no kernel to boot");
  VmOptions o;
  o.cpus = a_.cpus;
  o.memBytes = a_.memoryMiB << 20;
  o.boot.kernelPath = a_.kernel;
  o.boot.initrdPath = a_.initrd;
  o.boot.cmdline = a_.cmdline;
  o.disks = a_.disks;
  return Vm::boot(o, callbacks(generation_ + 1));
}

std::unique_ptr<Vm> Host::restoreVm(const std::string& path) {
  // With no disks given, restore() would open the paths stored in the snapshot: disks nobody locked. The
  // records say how many it has before anything is opened.
  RestoreConfig cfg = checkSnapshotRecords(openSnapshot(path), path, &a_.disks);
  if (cfg.disks.size() != a_.disks.size()) {
    throw invalid("the snapshot " + path + " has " + std::to_string(cfg.disks.size()) + " disks; this micro-VM has " + std::to_string(a_.disks.size()));
  }
  return Vm::restore(path, callbacks(generation_ + 1), &a_.disks);
}

void Host::openSerialLog() {
  serialLog_.reset(::open(a_.serialLog.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!serialLog_.valid()) throw openError("serial log", a_.serialLog, errno);
  struct stat st;
  serialLogBytes_ = fstat(serialLog_.get(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

void Host::writeRuntimeRecord() {
  std::string json = JsonObject()
                         .num("protocol", kProtocolVersion)
                         .str("vmId", a_.vmId)
                         .num("pid", uint64_t(getpid()))
                         .str("startTime", startTime_)
                         .str("startedAt", startedAt_)
                         .str("accel", "kvm")
                         .str("accelReason", a_.accelReason)
                         .str("control", a_.control)
                         .str("serial", a_.serial)
                         .str("serialLog", a_.serialLog)
                         .num("serialLogStart", serialLogStart_)
                         .str("exitRecord", a_.exitRecord)
                         .done();
  // The runtime directory does not outlive a reboot: atomic is enough, durable is not needed.
  writeFileAtomic(a_.record, json + "\n", false);
  wroteRecord_ = true;
}

void Host::notifyReady(const std::string& line) {
  if (a_.readyFd < 0) return;
  std::string l = line + "\n";
  ssize_t n = ::write(a_.readyFd, l.data(), l.size());  // EPIPE when the parent is gone: nothing to tell
  (void)n;
  ::close(a_.readyFd);
}

void Host::cleanUpFailedStart() {
  if (createdControl_) ::unlink(a_.control.c_str());
  if (createdSerial_) ::unlink(a_.serial.c_str());
  if (wroteRecord_) ::unlink(a_.record.c_str());
}

// ---- the loop ----

void Host::loop() {
  epoll_event events[32];
  while (!finished_) {
    int n = epoll_wait(epoll_.get(), events, 32, timeoutMs());
    if (n < 0 && errno != EINTR) {
      logLine("epoll_wait failed: %s", std::strerror(errno));
      requestStop(Stop::Kill, "the micro-VM process could not wait for events and stopped the guest");
      n = 0;
      ::usleep(10000);
    }
    for (int i = 0; i < n && !finished_; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == kTagNotify) onNotify();
      else if (tag == kTagSignal) onSignal();
      else if (tag == kTagControl) acceptClient(false);
      else if (tag == kTagSerial) acceptClient(true);
      else {
        auto it = clients_.find(tag);  // absent: closed earlier in this batch
        if (it != clients_.end() && !it->second->closing) onClientEvent(*it->second, events[i].events);
      }
    }
    if (!finished_) checkDeadlines();
    sweepClients();
  }
}

int Host::timeoutMs() const {
  uint64_t next = 0;
  for (uint64_t d : {shutdownDeadline_, stopDeadline_})
    if (d && (!next || d < next)) next = d;
  if (!next) return -1;
  uint64_t now = nowMs();
  return next <= now ? 0 : int(std::min<uint64_t>(next - now, 60000));
}

void Host::checkDeadlines() {
  uint64_t now = nowMs();
  if (shutdownDeadline_ && now >= shutdownDeadline_) {
    shutdownDeadline_ = 0;
    if (stop_ == Stop::Shutdown) requestStop(Stop::ShutdownForced, stopDetail_);
  }
  if (stopDeadline_ && now >= stopDeadline_) {
    // The vCPUs did not acknowledge the stop (a stuck KVM_RUN). Record the end and let process exit take the
    // threads with it: joining them would hang, and a VM object with live threads cannot be destroyed.
    ExitInfo e;
    e.reason = "stopped";
    ExitRecordData rec = classify(e);
    rec.detail += " (the vCPUs did not stop within " + std::to_string(kStopGraceMs) + " ms; the process ended them)";
    finish(rec);
    logLine("vCPUs did not stop; exiting without joining them");
    if (snapshotThread_.joinable()) snapshotThread_.detach();
    _exit(0);
  }
}

void Host::onNotify() {
  uint64_t v;
  ssize_t r = ::read(eventFd_.get(), &v, sizeof v);
  (void)r;
  std::string out;
  std::vector<Mailbox::Exit> exits;
  uint64_t dropped;
  bool snapshotDone, serialSpace;
  {
    std::lock_guard<std::mutex> g(box_.mu);
    out.swap(box_.serial);
    serialSpace = box_.serialSpace;
    box_.serialSpace = false;
    exits.swap(box_.exits);
    dropped = box_.dropped;
    box_.dropped = 0;
    snapshotDone = box_.snapshotDone;
    box_.notified = false;
  }
  if (!out.empty()) deliverSerial(out);
  if (dropped) {
    droppedSerial_ += dropped;
    logLine("dropped %llu bytes of guest output (this process fell behind)", (unsigned long long)dropped);
  }
  if (serialSpace) feedSerialInput();
  if (snapshotDone) finishSnapshot();
  for (auto& e : exits) {
    if (e.generation != generation_ || finished_) continue;  // a guest that was replaced (reset, snapshot-load)
    onGuestExit(e.info);
  }
}

void Host::onSignal() {
  signalfd_siginfo si;
  while (::read(signalFd_.get(), &si, sizeof si) == ssize_t(sizeof si)) {
    const char* name = si.ssi_signo == SIGTERM ? "SIGTERM" : si.ssi_signo == SIGINT ? "SIGINT" : "SIGHUP";
    logLine("received %s from pid %u", name, si.ssi_pid);
    requestStop(Stop::Signal, std::string("the micro-VM process received ") + name);
  }
}

void Host::acceptClient(bool serial) {
  Fd fd(accept4(serial ? serialListen_.get() : controlListen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd.valid()) return;  // EAGAIN, or the peer gave up already
  if (!serial) {
    size_t control = 0;
    for (auto& [t, c] : clients_)
      if (!c->serial && !c->closing) control++;
    if (control >= kMaxControlClients) {
      std::string line = replyError(false, 0, "EBUSY", "too many control connections (at most " + std::to_string(kMaxControlClients) + ")");
      ssize_t n = ::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)n;
      return;
    }
  }
  auto c = std::make_unique<Client>();
  c->tag = nextTag_++;
  c->serial = serial;
  c->fd = std::move(fd);
  epoll_event ev{};
  ev.events = c->events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = c->tag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) return;
  Client& ref = *c;
  clients_[c->tag] = std::move(c);
  if (serial) {
    // One serial client: the newest. A daemon that adopts this VM must not be locked out by a stale peer.
    auto old = clients_.find(serialClient_);
    if (old != clients_.end()) drop(*old->second, "replaced by a newer serial connection");
    serialClient_ = ref.tag;
  } else {
    send(ref, eventLine("hello", JsonObject().num("protocol", kProtocolVersion).num("pid", uint64_t(getpid())).str("startTime", startTime_).str("state", state_).done()));
  }
}

void Host::onClientEvent(Client& c, uint32_t events) {
  if (events & EPOLLOUT) flush(c);
  if (c.closing) return;
  if (events & (EPOLLHUP | EPOLLERR)) {
    drop(c, nullptr);
    return;
  }
  if (!c.eof && (events & (EPOLLIN | EPOLLRDHUP))) {
    if (c.serial) readSerial(c);
    else readControl(c);
  }
}

void Host::readControl(Client& c) {
  char buf[kReadChunk];
  for (int i = 0; i < kReadsPerEvent && !c.closing; i++) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n == 0) {
      c.eof = true;
      if (c.pending() == 0) drop(c, nullptr);
      else flush(c);  // stops watching for input; closes once the replies are out
      return;
    }
    if (n < 0) {
      drop(c, nullptr);
      return;
    }
    consumeControlInput(
        c.reader, buf, size_t(n),
        [&](const Request& r) {
          if (!c.closing) handle(c, r);
        },
        [&](const std::string& reply) { send(c, reply); });
  }
}

void Host::readSerial(Client& c) {
  char buf[kReadChunk];
  for (int i = 0; i < kReadsPerEvent && !c.closing; i++) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      drop(c, nullptr);
      return;
    }
    // Input to a stopping guest goes nowhere.
    if (!vm_ || stop_ != Stop::None) continue;
    size_t took = vm_->serialInput(reinterpret_cast<const uint8_t*>(buf), size_t(n));
    if (took < size_t(n)) {
      // The guest is not reading: keep the rest (at most one read's worth) and stop reading the socket, so
      // the sender's writes back up instead of bytes being dropped. The UART says when there is room.
      serialInputPending_.assign(buf + took, size_t(n) - took);
      c.inputPaused = true;
      updateEvents(c);
      return;
    }
  }
}

void Host::feedSerialInput() {
  auto it = clients_.find(serialClient_);
  if (it == clients_.end() || it->second->closing) {
    serialInputPending_.clear();
    return;
  }
  Client& c = *it->second;
  if (!c.inputPaused) return;
  if (vm_ && stop_ == Stop::None && !serialInputPending_.empty()) {
    size_t took = vm_->serialInput(reinterpret_cast<const uint8_t*>(serialInputPending_.data()), serialInputPending_.size());
    serialInputPending_.erase(0, took);
    if (!serialInputPending_.empty()) return;  // still full: the next announcement brings us back
  }
  serialInputPending_.clear();
  c.inputPaused = false;
  updateEvents(c);
}

void Host::updateEvents(Client& c) {
  if (c.closing) return;
  uint32_t want = (c.eof ? 0u : uint32_t(EPOLLRDHUP) | (c.inputPaused ? 0u : uint32_t(EPOLLIN))) | (c.pending() > 0 ? uint32_t(EPOLLOUT) : 0u);
  if (want == c.events) return;
  c.events = want;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.tag;
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
}

void Host::send(Client& c, const std::string& data) {
  if (c.closing || data.empty()) return;
  size_t cap = c.serial ? kSerialOutCap : kControlOutCap;
  if (c.pending() + data.size() > cap) {
    drop(c, c.serial ? "it left more than 4 MiB of guest output unread" : "it left more than 1 MiB of replies unread");
    return;
  }
  if (c.outOff > 0 && c.outOff == c.out.size()) {
    c.out.clear();
    c.outOff = 0;
  }
  c.out += data;
  flush(c);
}

void Host::flush(Client& c) {
  while (c.pending() > 0) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.outOff, c.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      drop(c, nullptr);
      return;
    }
    c.outOff += size_t(n);
  }
  if (c.pending() == 0 && c.eof) {
    drop(c, nullptr);
    return;
  }
  if (c.pending() == 0) {
    c.out.clear();
    c.out.shrink_to_fit();  // a burst must not keep its buffer for the life of the VM
    c.outOff = 0;
  } else if (c.outOff > 65536 && c.outOff * 2 > c.out.size()) {
    c.out.erase(0, c.outOff);
    c.outOff = 0;
  }
  updateEvents(c);
}

// Clients are only marked here and freed by sweepClients(), outside any callback that still uses them.
void Host::drop(Client& c, const char* why) {
  if (c.closing) return;
  if (why) logLine("dropping a %s client: %s", c.serial ? "serial" : "control", why);
  c.closing = true;
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  if (serialClient_ == c.tag) {
    serialClient_ = 0;
    serialInputPending_.clear();  // typed by a client that is gone
  }
}

void Host::sweepClients() {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->second->closing) it = clients_.erase(it);
    else ++it;
  }
}

void Host::broadcast(const std::string& line) {
  for (auto& [t, c] : clients_)
    if (!c->serial) send(*c, line);
}

void Host::setState(const char* s) {
  if (std::strcmp(state_, s) == 0) return;
  state_ = s;
  broadcast(eventLine("state", stateJson()));
}

void Host::deliverSerial(const std::string& data) {
  if (serialLog_.valid()) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(serialLog_.get(), data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // A full disk must not stop the guest; say so once per failure streak.
        if (!serialLogFailed_) logLine("cannot append to %s: %s", a_.serialLog.c_str(), std::strerror(errno));
        serialLogFailed_ = true;
        break;
      }
      serialLogFailed_ = false;
      off += size_t(n);
    }
    serialLogBytes_ += off;
    if (serialLogBytes_ > kSerialLogRotateBytes) rotateSerialLog();
  }
  tail_.append(data.data(), data.size());
  auto it = clients_.find(serialClient_);
  if (it != clients_.end()) send(*it->second, data);
}

// A guest printing without end must not fill the disk: one previous generation is kept as <log>.1.
void Host::rotateSerialLog() {
  std::string old = a_.serialLog + ".1";
  if (::rename(a_.serialLog.c_str(), old.c_str()) != 0) {
    logLine("cannot rotate %s: %s", a_.serialLog.c_str(), std::strerror(errno));
    serialLogBytes_ = 0;  // try again after another cap's worth
    return;
  }
  try {
    openSerialLog();
  } catch (const std::exception& e) {
    logLine("cannot reopen the serial log: %s", e.what());
    serialLog_.reset();
  }
}

// ---- commands ----

void Host::handle(Client& c, const Request& r) {
  try {
    execute(c, r);
  } catch (const VmError& e) {
    send(c, replyError(true, r.id, e.code, e.what()));
  } catch (const std::exception& e) {
    send(c, replyError(true, r.id, "EENGINE", e.what()));
  }
}

void Host::requireGuest(bool allowDuringSnapshot) const {
  if (stop_ != Stop::None) throw VmError("ESTATE", "the guest is stopping");
  if (snapshotActive_ && !allowDuringSnapshot) throw VmError("EBUSY", "a snapshot is being saved; try again when it is done");
}

void Host::execute(Client& c, const Request& r) {
  switch (r.cmd) {
    case Cmd::State:
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::Info:
      send(c, replyOk(r.id, infoJson()));
      return;
    case Cmd::Pause:
      requireGuest();
      if (std::strcmp(state_, "running") != 0) throw VmError("ESTATE", std::string("the guest is ") + state_ + ", not running");
      vm_->pause();
      setState("paused");
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::Resume:
      requireGuest();
      if (std::strcmp(state_, "paused") != 0) throw VmError("ESTATE", std::string("the guest is ") + state_ + ", not paused");
      vm_->resume();
      setState("running");
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::Reset:
      // No firmware to reset: the kernel boots afresh in this process. Built first, so a kernel that has
      // gone missing leaves the running guest alone.
      requireGuest();
      replaceGuest(bootVm(), false);
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::Shutdown: {
      if (stop_ == Stop::Shutdown) {  // already asked: the first timeout stands
        send(c, replyOk(r.id, stateJson()));
        return;
      }
      requireGuest();
      // No ACPI here: Ctrl-Alt-Del is the request (Linux with reboot=k then resets through the i8042, which
      // ends a micro-VM). A paused guest cannot see it.
      if (std::strcmp(state_, "paused") == 0) vm_->resume();
      vm_->sendCtrlAltDel();
      stop_ = Stop::Shutdown;
      stopDetail_ = "the guest did not power off within " + std::to_string(r.number) + " ms of Ctrl-Alt-Del; forced off";
      shutdownDeadline_ = nowMs() + r.number;
      setState("stopping");
      send(c, replyOk(r.id, stateJson()));
      return;
    }
    case Cmd::Kill:
      requestStop(Stop::Kill, "forced off by the host");
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::Quit:
      requestStop(Stop::Quit, "the micro-VM was told to quit (the guest was not asked to shut down)");
      send(c, replyOk(r.id, stateJson()));
      return;
    case Cmd::SnapshotSave:
      requireGuest();
      startSnapshot(c, r);
      return;  // answered by finishSnapshot()
    case Cmd::SnapshotLoad: {
      requireGuest();
      uint64_t t0 = monotonicNanos();
      // The snapshot is checked and the new VM built before the running guest is touched: a bad file leaves
      // it as it was.
      replaceGuest(restoreVm(r.path), true);
      uint64_t micros = (monotonicNanos() - t0) / 1000;
      send(c, replyOk(r.id, JsonObject().str("path", r.path).num("micros", micros).str("state", state_).done()));
      return;
    }
  }
}

void Host::replaceGuest(std::unique_ptr<Vm> next, bool paused) {
  // Output the old guest printed is still in the mailbox: deliver it before anything of the new one. Its
  // exit may be in there too, in which case there is nothing left to replace.
  onNotify();
  if (finished_) throw VmError("ESTATE", "the guest has stopped");
  std::unique_ptr<Vm> old = std::move(vm_);
  generation_++;
  vm_ = std::move(next);
  old.reset();  // stops and joins its vCPUs; its exit report carries the old generation and is ignored
  try {
    vm_->start(paused);
  } catch (const std::exception& e) {
    // The old guest is gone and the new one cannot run: this is the end of the VM, recorded as such.
    ExitRecordData rec;
    rec.at = isoNow();
    rec.reason = "crashed";
    rec.detail = std::string("the guest could not be started again: ") + e.what();
    rec.logTail = tail_.lines(20);
    finish(rec);
    throw;
  }
  setState(paused ? "paused" : "running");
  feedSerialInput();  // a fresh UART has room for what the old one refused
}

void Host::requestStop(Stop kind, const std::string& detail) {
  bool forced = stop_ == Stop::Kill || stop_ == Stop::Quit || stop_ == Stop::Signal || stop_ == Stop::ShutdownForced;
  if (forced || finished_) return;  // the first forced stop names the exit
  stop_ = kind;
  stopDetail_ = detail;
  shutdownDeadline_ = 0;
  stopDeadline_ = nowMs() + kStopGraceMs;
  setState("stopping");
  ExitInfo e;
  e.reason = "stopped";
  e.detail = detail;
  vm_->requestExit(e);
}

void Host::startSnapshot(Client& c, const Request& r) {
  snapshotActive_ = true;
  snapshotClient_ = c.tag;
  snapshotRequest_ = r.id;
  snapshotPath_ = r.path;
  snapshotStart_ = monotonicNanos();
  Vm* vm = vm_.get();
  Mailbox* box = &box_;
  std::string path = r.path;
  // Writing guest memory takes a while: on its own thread, so state, info, kill and signals are served
  // meanwhile. The guest is paused inside saveSnapshot() and resumed after.
  snapshotThread_ = std::thread([vm, box, path] {
    uint64_t bytes = 0;
    std::string code, message;
    try {
      bytes = vm->saveSnapshot(path);
    } catch (const VmError& e) {
      code = e.code;
      message = e.what();
    } catch (const std::exception& e) {
      code = "EENGINE";
      message = e.what();
    }
    std::lock_guard<std::mutex> g(box->mu);
    box->snapshotDone = true;
    box->snapshotBytes = bytes;
    box->snapshotCode = code;
    box->snapshotMessage = message;
    box->notifyLocked();
  });
}

void Host::finishSnapshot() {
  if (!snapshotActive_) return;
  if (snapshotThread_.joinable()) snapshotThread_.join();
  snapshotActive_ = false;
  uint64_t bytes;
  std::string code, message;
  {
    std::lock_guard<std::mutex> g(box_.mu);
    box_.snapshotDone = false;
    bytes = box_.snapshotBytes;
    code.swap(box_.snapshotCode);
    message.swap(box_.snapshotMessage);
  }
  auto it = clients_.find(snapshotClient_);
  if (it == clients_.end()) return;  // the asker left; the file is written (or not) all the same
  uint64_t micros = (monotonicNanos() - snapshotStart_) / 1000;
  if (code.empty()) send(*it->second, replyOk(snapshotRequest_, JsonObject().str("path", snapshotPath_).num("bytes", bytes).num("micros", micros).done()));
  else send(*it->second, replyError(true, snapshotRequest_, code, message));
}

ExitRecordData Host::classify(const ExitInfo& info) const {
  ExitRecordData r;
  r.at = isoNow();
  bool guestCrash = info.reason == "crashed";
  if (guestCrash) {
    r.reason = "crashed";
    r.detail = info.detail;
  } else if (stop_ == Stop::Kill || stop_ == Stop::ShutdownForced) {
    r.reason = "killed";
    r.detail = stopDetail_;
  } else if (stop_ == Stop::Quit) {
    r.reason = "shutdown";
    r.detail = stopDetail_;
  } else if (stop_ == Stop::Signal) {
    r.reason = "host-signal";
    r.detail = stopDetail_;
  } else if (stop_ == Stop::Shutdown) {
    r.reason = "shutdown";
    r.detail = "the guest powered off after a Ctrl-Alt-Del shutdown request (" + info.detail + ")";
  } else if (info.reason == "guest-poweroff") {
    r.reason = "guest-poweroff";
    r.detail = info.detail;
  } else {
    r.reason = "crashed";
    r.detail = "the guest stopped unexpectedly: " + info.detail;
  }
  r.logTail = tail_.lines(20);
  return r;
}

void Host::onGuestExit(const ExitInfo& info) {
  if (snapshotActive_) finishSnapshot();  // it uses the VM; its reply goes out before the exit event
  vm_->join();
  onNotify();  // output printed just before the end belongs in the log and the tail
  finish(classify(info));
}

void Host::finish(const ExitRecordData& rec) {
  if (finished_) return;
  finished_ = true;
  std::string json = exitRecordJson(rec);
  try {
    writeFileAtomic(a_.exitRecord, json + "\n", true);
  } catch (const std::exception& e) {
    logLine("cannot write the exit record %s: %s", a_.exitRecord.c_str(), e.what());
  }
  logLine("guest ended: %s: %s", rec.reason.c_str(), rec.detail.c_str());
  state_ = "stopped";
  broadcast(eventLine("exit", json));
  flushAll(kExitFlushMs);
  ::unlink(a_.control.c_str());
  ::unlink(a_.serial.c_str());
  for (auto& [t, c] : clients_) c->closing = true;
  if (serialLog_.valid()) fsync(serialLog_.get());
}

// Last replies and the exit event reach clients that are reading, within a bounded time.
void Host::flushAll(int budgetMs) {
  uint64_t deadline = nowMs() + uint64_t(budgetMs);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Client*> who;
    for (auto& [t, c] : clients_) {
      if (c->closing || c->pending() == 0) continue;
      fds.push_back({c->fd.get(), POLLOUT, 0});
      who.push_back(c.get());
    }
    uint64_t now = nowMs();
    if (fds.empty() || now >= deadline) return;
    int n = ::poll(fds.data(), fds.size(), int(deadline - now));
    if (n < 0 && errno != EINTR) return;
    for (size_t i = 0; i < fds.size(); i++)
      if (fds[i].revents) flush(*who[i]);
  }
}

std::string Host::infoJson() const {
  JsonObject o;
  o.str("state", state_).num("pid", uint64_t(getpid())).str("startTime", startTime_).str("startedAt", startedAt_).str("accel", "kvm");
  o.num("cpus", vm_->cpus()).num("memoryBytes", vm_->memBytes()).num("disks", vm_->diskCount());
  o.num("bootProtocol", vm_->kernel().protocol);
  if (snapshotActive_) o.str("job", "snapshot-save");
  else o.null("job");
  size_t control = 0;
  for (auto& [t, c] : clients_)
    if (!c->serial && !c->closing) control++;
  o.num("controlClients", control).boolean("serialClient", clients_.count(serialClient_) != 0);
  o.num("droppedSerialBytes", droppedSerial_).num("protocol", kProtocolVersion);
  return o.done();
}

}  // namespace

int runHost(const HostArgs& args) {
  Host h(args);
  return h.run();
}

}  // namespace host
}  // namespace vmdesk
