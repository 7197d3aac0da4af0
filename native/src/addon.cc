// N-API surface of the micro-VMM: probe(), selfTest(), and the Vm class. vCPUs run on their own threads;
// serial output and exits reach JavaScript through thread-safe functions, never by blocking the event loop.
// flockFile()/funlockFile() serve the rest of the app (cross-process locks) on every platform.
#include <napi.h>
#include <sys/file.h>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include "common.h"
#include "napi_errors.h"

#ifdef __linux__
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <vector>
#include "kvm/kvm.h"
#include "testing.h"
#include "vstate/vm.h"
extern char** environ;
#endif

#ifdef __APPLE__
#include <TargetConditionals.h>
#endif

namespace {

using namespace vmdesk;

// flock(2) rather than lock files with pids in them: the kernel drops the lock when the holder dies,
// however it dies, so there is never a stale lock to guess about.
int fdArg(const Napi::CallbackInfo& info, const char* usage) {
  double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d > 2147483647.0 || std::floor(d) != d) throw Napi::TypeError::New(info.Env(), std::string(usage) + ": fd must be a file descriptor number");
  return int(d);
}

VmError lockError(const char* what, int err) {
  errno = err;
  return sysError(what, err == EBADF || err == EINVAL ? "EINVAL" : "EHOST");
}

// flockFile(fd, exclusive, wait): true once held; false when another holder has it and wait is false.
// With wait the calling thread blocks until the lock is free.
Napi::Value FlockFile(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, "flockFile(fd, exclusive, wait)");
  bool wait = info[2].ToBoolean().Value();
  int op = (info[1].ToBoolean().Value() ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
  for (;;) {
    if (flock(fd, op) == 0) return Napi::Boolean::New(info.Env(), true);
    int err = errno;
    if (err == EINTR) continue;
    if (!wait && err == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    throw toJsError(info.Env(), lockError("flock", err));
  }
}

Napi::Value FunlockFile(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, "funlockFile(fd)");
  while (flock(fd, LOCK_UN) != 0) {
    int err = errno;
    if (err != EINTR) throw toJsError(info.Env(), lockError("flock unlock", err));
  }
  return info.Env().Undefined();
}

#define GUARD(env, body)                                   \
  try {                                                    \
    body                                                   \
  } catch (const std::exception& e) {                      \
    throw toJsError(env, e);                               \
  }

#ifdef __linux__

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProbeResult p = probeKvm();
  Napi::Object o = Napi::Object::New(env);
  o.Set("platform", "linux");
  o.Set("hypervisor", "kvm");
  o.Set("available", p.available);
  o.Set("reason", p.reason);
  o.Set("fix", p.fix);
  o.Set("apiVersion", p.apiVersion);
  o.Set("maxVcpus", p.maxVcpus);
  o.Set("recommendedVcpus", p.recommendedVcpus);
  o.Set("module", p.module);
  o.Set("paravirtualized", p.paravirtualized);
  o.Set("missing", p.missing);
  Napi::Object caps = Napi::Object::New(env);
  for (auto& [k, v] : p.caps) caps.Set(k, v);
  o.Set("caps", caps);
  return o;
}

class SelfTestWorker : public Napi::AsyncWorker {
 public:
  SelfTestWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { r_ = runSelfTest(); }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("ok", r_.ok);
    o.Set("class", r_.cls);
    o.Set("reason", r_.reason);
    o.Set("loops", double(r_.loops));
    o.Set("nanos", double(r_.nanos));
    o.Set("loopsPerSecond", r_.loopsPerSecond);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  SelfTestResult r_;
};

Napi::Value SelfTest(const Napi::CallbackInfo& info) {
  auto* w = new SelfTestWorker(info.Env());
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Object regsToJs(Napi::Env env, const kvm_regs& r) {
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* n, uint64_t v) { o.Set(n, Napi::BigInt::New(env, v)); };
  set("rax", r.rax); set("rbx", r.rbx); set("rcx", r.rcx); set("rdx", r.rdx);
  set("rsi", r.rsi); set("rdi", r.rdi); set("rsp", r.rsp); set("rbp", r.rbp);
  set("r8", r.r8); set("r9", r.r9); set("r10", r.r10); set("r11", r.r11);
  set("r12", r.r12); set("r13", r.r13); set("r14", r.r14); set("r15", r.r15);
  set("rip", r.rip); set("rflags", r.rflags);
  return o;
}

// Serial bytes are coalesced: a vCPU appends and schedules at most one pending JS call at a time.
struct SerialPipe {
  std::mutex mu;
  std::string pending;
  bool scheduled = false;
};

class VmWrap : public Napi::ObjectWrap<VmWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Vm", {
      InstanceMethod("start", &VmWrap::Start),
      InstanceMethod("pause", &VmWrap::Pause),
      InstanceMethod("resume", &VmWrap::Resume),
      InstanceMethod("stop", &VmWrap::Stop),
      InstanceMethod("writeSerial", &VmWrap::WriteSerial),
      InstanceMethod("sendCtrlAltDel", &VmWrap::SendCtrlAltDel),
      InstanceMethod("snapshot", &VmWrap::Snapshot),
      InstanceMethod("state", &VmWrap::State),
      InstanceMethod("regs", &VmWrap::Regs),
      InstanceMethod("info", &VmWrap::Info),
      InstanceMethod("close", &VmWrap::Close),
    });
  }

  VmWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VmWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "new Vm(options) needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value onSerial = o.Get("onSerial"), onExit = o.Get("onExit");
    if (!onSerial.IsFunction() || !onExit.IsFunction()) throw Napi::TypeError::New(env, "options.onSerial and options.onExit must be functions");

    std::vector<DiskConfig> disks;
    if (o.Get("disks").IsArray()) {
      Napi::Array arr = o.Get("disks").As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Object d = arr.Get(i).As<Napi::Object>();
        disks.push_back({d.Get("path").As<Napi::String>().Utf8Value(), d.Get("readOnly").ToBoolean().Value()});
      }
    }

    serial_ = std::make_shared<SerialPipe>();
    // One thread-safe function carries both kinds of event so they reach JS in the order they happened.
    serialCb_ = Napi::Persistent(onSerial.As<Napi::Function>());
    exitCb_ = Napi::Persistent(onExit.As<Napi::Function>());
    eventsFn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "vmdesk-vm-events", 0, 1);
    tsfnLive_ = true;

    VmCallbacks cb;
    auto pipe = serial_;
    Napi::ThreadSafeFunction serialFn = eventsFn_;
    cb.serial = [this, pipe, serialFn](const uint8_t* d, size_t n) mutable {
      std::lock_guard<std::mutex> g(pipe->mu);
      pipe->pending.append(reinterpret_cast<const char*>(d), n);
      if (pipe->scheduled) return;
      pipe->scheduled = true;
      serialFn.NonBlockingCall([this](Napi::Env env, Napi::Function) { FlushSerial(env); });
    };
    Napi::ThreadSafeFunction exitFn = eventsFn_;
    cb.exit = [this, exitFn](const ExitInfo& e) mutable {
      auto* copy = new ExitInfo(e);
      napi_status st = exitFn.NonBlockingCall(copy, [this](Napi::Env env, Napi::Function, ExitInfo* ex) {
        std::unique_ptr<ExitInfo> own(ex);
        // Flush serial output produced just before the exit so it is delivered first.
        FlushSerial(env);
        if (vm_) vm_->join();
        Napi::Object o = Napi::Object::New(env);
        o.Set("reason", ex->reason);
        o.Set("detail", ex->detail);
        o.Set("vcpu", ex->vcpu);
        if (ex->hasRegs) o.Set("regs", regsToJs(env, ex->regs));
        ReleaseFns();
        if (!exitCb_.IsEmpty()) exitCb_.Call({o});
      });
      if (st != napi_ok) delete copy;
    };

    try {
      Napi::Value from = o.Get("restoreFrom");
      if (from.IsString()) {
        vm_ = Vm::restore(from.As<Napi::String>().Utf8Value(), cb, &disks);
      } else {
        VmOptions opts;
        opts.cpus = o.Get("cpus").IsNumber() ? o.Get("cpus").As<Napi::Number>().Uint32Value() : 1;
        double memMiB = o.Get("memoryMiB").IsNumber() ? o.Get("memoryMiB").As<Napi::Number>().DoubleValue() : 128;
        opts.memBytes = uint64_t(memMiB) << 20;
        if (!o.Get("kernel").IsString()) throw invalid("options.kernel (path of a bzImage) is required");
        opts.boot.kernelPath = o.Get("kernel").As<Napi::String>().Utf8Value();
        if (o.Get("initrd").IsString()) opts.boot.initrdPath = o.Get("initrd").As<Napi::String>().Utf8Value();
        if (o.Get("cmdline").IsString()) opts.boot.cmdline = o.Get("cmdline").As<Napi::String>().Utf8Value();
        opts.disks = disks;
        vm_ = Vm::boot(opts, cb);
      }
    } catch (const std::exception& e) {
      ReleaseFns();
      throw toJsError(env, e);
    }
    Ref();  // a VM with live vCPU threads must not be garbage-collected; released when it exits or closes
    refHeld_ = true;
  }

  ~VmWrap() override {
    // Garbage-collected while running: stop the guest; the exit TSFN may no longer call into JS.
    vm_.reset();
  }

 private:
  void FlushSerial(Napi::Env env) {
    std::string chunk;
    {
      std::lock_guard<std::mutex> g(serial_->mu);
      chunk.swap(serial_->pending);
      serial_->scheduled = false;
    }
    if (!chunk.empty() && !serialCb_.IsEmpty()) serialCb_.Call({Napi::Buffer<char>::Copy(env, chunk.data(), chunk.size())});
  }
  void ReleaseFns() {
    if (refHeld_) {
      refHeld_ = false;
      Unref();
    }
    if (!tsfnLive_) return;
    tsfnLive_ = false;
    eventsFn_.Release();
  }
  Vm& vm(Napi::Env env) {
    if (!vm_) throw Napi::Error::New(env, "the VM was closed");
    return *vm_;
  }
  Napi::Value Start(const Napi::CallbackInfo& info) {
    GUARD(info.Env(), vm(info.Env()).start(info[0].ToBoolean().Value());)
    return info.Env().Undefined();
  }
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    GUARD(info.Env(), vm(info.Env()).pause();)
    return info.Env().Undefined();
  }
  Napi::Value Resume(const Napi::CallbackInfo& info) {
    GUARD(info.Env(), vm(info.Env()).resume();)
    return info.Env().Undefined();
  }
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    ExitInfo e;
    e.reason = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "stopped";
    e.detail = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "stopped by the host";
    GUARD(info.Env(), vm(info.Env()).requestExit(e);)
    return info.Env().Undefined();
  }
  Napi::Value WriteSerial(const Napi::CallbackInfo& info) {
    if (!info[0].IsBuffer()) throw Napi::TypeError::New(info.Env(), "writeSerial(buffer)");
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    GUARD(info.Env(), vm(info.Env()).serialInput(b.Data(), b.Length());)
    return info.Env().Undefined();
  }
  Napi::Value SendCtrlAltDel(const Napi::CallbackInfo& info) {
    GUARD(info.Env(), vm(info.Env()).sendCtrlAltDel();)
    return info.Env().Undefined();
  }
  Napi::Value State(const Napi::CallbackInfo& info) {
    if (!vm_) return Napi::String::New(info.Env(), "closed");
    return Napi::String::New(info.Env(), vm_->state());
  }
  Napi::Value Regs(const Napi::CallbackInfo& info) {
    uint32_t cpu = info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 0;
    kvm_regs r{};
    GUARD(info.Env(), r = vm(info.Env()).regs(cpu);)
    return regsToJs(info.Env(), r);
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Vm& v = vm(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("cpus", v.cpus());
    o.Set("memoryBytes", double(v.memBytes()));
    const x86::KernelInfo& k = v.kernel();
    o.Set("bootProtocol", k.protocol);
    o.Set("kernelLoadAddr", double(k.loadAddr));
    o.Set("kernelEntry", double(k.entry64));
    o.Set("initrdAddr", double(k.initrdAddr));
    o.Set("initrdBytes", double(k.initrdBytes));
    return o;
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (vm_) {
      ExitInfo e;
      e.reason = "stopped";
      e.detail = "closed by the host";
      vm_->requestExit(e);
      vm_->join();
    }
    ReleaseFns();
    vm_.reset();
    return info.Env().Undefined();
  }

  class SnapshotWorker : public Napi::AsyncWorker {
   public:
    SnapshotWorker(Napi::Env env, VmWrap* owner, std::string path)
        : Napi::AsyncWorker(env), owner_(owner), path_(std::move(path)), deferred_(Napi::Promise::Deferred::New(env)) {
      owner->Ref();  // keep the VM alive while its memory is written
    }
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
      try {
        uint64_t t0 = monotonicNanos();
        bytes_ = owner_->vm_->saveSnapshot(path_);
        nanos_ = monotonicNanos() - t0;
      } catch (const VmError& e) {
        code_ = e.code;
        SetError(e.what());
      } catch (const std::exception& e) {
        code_ = "EENGINE";
        SetError(e.what());
      }
    }
    void OnOK() override {
      owner_->Unref();
      Napi::Object o = Napi::Object::New(Env());
      o.Set("bytes", double(bytes_));
      o.Set("nanos", double(nanos_));
      deferred_.Resolve(o);
    }
    void OnError(const Napi::Error& e) override {
      owner_->Unref();
      Napi::Error err = e;
      err.Set("code", Napi::String::New(Env(), code_.empty() ? "EENGINE" : code_));
      deferred_.Reject(err.Value());
    }

   private:
    VmWrap* owner_;
    std::string path_;
    Napi::Promise::Deferred deferred_;
    std::string code_;
    uint64_t bytes_ = 0, nanos_ = 0;
  };

  Napi::Value Snapshot(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "snapshot(path)");
    vm(env);
    auto* w = new SnapshotWorker(env, this, info[0].As<Napi::String>().Utf8Value());
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  std::unique_ptr<Vm> vm_;
  std::shared_ptr<SerialPipe> serial_;
  Napi::ThreadSafeFunction eventsFn_;
  Napi::FunctionReference serialCb_, exitCb_;
  bool tsfnLive_ = false;
  bool refHeld_ = false;
};

// spawnDetached(file, argv, outputFd) -> {pid, readyFd}: starts the micro-VM executable in its own session
// (it must outlive the daemon) with stdin on /dev/null, stdout and stderr on outputFd and fd 3 the write end
// of a pipe whose read end is returned. posix_spawn (vfork-like) rather than Node's fork-based spawn: forking
// a Node process costs milliseconds that a micro-VM's start-up should not pay.
Napi::Value SpawnDetached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsArray() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "spawnDetached(file, argv, outputFd)");
  std::string file = info[0].As<Napi::String>().Utf8Value();
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<std::string> args{file};
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!a.Get(i).IsString()) throw Napi::TypeError::New(env, "spawnDetached: argv must hold strings");
    args.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  }
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  int outFd = info[2].As<Napi::Number>().Int32Value();
  if (outFd < 3 || fcntl(outFd, F_GETFD) < 0) throw Napi::TypeError::New(env, "spawnDetached: outputFd must be an open file descriptor above 2");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) throw toJsError(env, sysError("pipe2", "EHOST"));
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, outFd, 1);
  posix_spawn_file_actions_adddup2(&fa, outFd, 2);
  posix_spawn_file_actions_adddup2(&fa, p[1], 3);
  // A session of its own, default dispositions (Node ignores SIGPIPE; exec keeps ignored signals ignored) and
  // no blocked signals, whatever the calling thread has.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, file.c_str(), &fa, &at, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  ::close(p[1]);
  if (rc != 0) {
    ::close(p[0]);
    errno = rc;
    throw toJsError(env, sysError("cannot start " + file, rc == ENOENT || rc == EACCES ? "EHOST" : "EENGINE"));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", double(pid));
  o.Set("readyFd", p[0]);
  return o;
}

// Node's names for the signals that end processes (sigabbrev_np needs glibc 2.32).
std::string signalName(int sig) {
  static const std::pair<int, const char*> names[] = {
      {SIGHUP, "SIGHUP"}, {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},
      {SIGBUS, "SIGBUS"}, {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
      {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGSYS, "SIGSYS"},  {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"},
  };
  for (auto& [n, name] : names)
    if (n == sig) return name;
  return "SIG" + std::to_string(sig);
}

// waitChild(pid) -> Promise<{code, signal}>: the exit status of a child started by spawnDetached, from a thread
// blocked in waitpid (libuv reaps only the children it started). It does not keep the event loop alive: a
// daemon may leave while its guests run on.
Napi::Value WaitChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  if (!(d >= 2) || d > 4194304 || std::floor(d) != d) throw Napi::TypeError::New(env, "waitChild(pid)");
  pid_t pid = pid_t(d);
  auto deferred = Napi::Promise::Deferred::New(env);
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "vmdesk-wait-child", 0, 1);
  tsfn.Unref(env);
  std::thread([pid, tsfn, deferred]() mutable {
    int status = 0;
    pid_t r;
    do r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    int err = r < 0 ? errno : 0;
    tsfn.BlockingCall([deferred, status, err](Napi::Env env, Napi::Function) {
      // Called with no env while the process is exiting (the queue is drained after finalization); nothing
      // may throw out of this callback then, or the runtime terminates the process.
      if (env == nullptr) return;
      try {
      Napi::Object o = Napi::Object::New(env);
      if (err) {
        o.Set("code", env.Null());
        o.Set("signal", env.Null());
        o.Set("error", std::string(std::strerror(err)));
      } else if (WIFSIGNALED(status)) {
        o.Set("code", env.Null());
        o.Set("signal", signalName(WTERMSIG(status)));
      } else {
        o.Set("code", WEXITSTATUS(status));
        o.Set("signal", env.Null());
      }
      deferred.Resolve(o);
      } catch (...) {
        // The environment is going away: nobody is left to tell.
      }
    });
    tsfn.Release();
  }).detach();
  return deferred.Promise();
}

#endif  // __linux__

#ifdef __APPLE__
// Hypervisor.framework sits behind the same interface later; for now report whether it is compiled in.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("platform", "darwin");
  o.Set("hypervisor", "hvf");
  o.Set("available", false);
  o.Set("reason", "the micro-VMM does not support Hypervisor.framework yet");
  return o;
}
Napi::Value SelfTest(const Napi::CallbackInfo& info) {
  auto d = Napi::Promise::Deferred::New(info.Env());
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("ok", false);
  o.Set("class", "unusable");
  o.Set("reason", "no KVM on macOS");
  d.Resolve(o);
  return d.Promise();
}
#endif

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("selfTest", Napi::Function::New(env, SelfTest));
  exports.Set("flockFile", Napi::Function::New(env, FlockFile));
  exports.Set("funlockFile", Napi::Function::New(env, FunlockFile));
#ifdef __linux__
  exports.Set("Vm", VmWrap::Define(env));
  exports.Set("spawnDetached", Napi::Function::New(env, SpawnDetached));
  exports.Set("waitChild", Napi::Function::New(env, WaitChild));
  exports.Set("__test", testHooks(env));
#endif
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(vmdesk_native, Init)
