// Test-only entry points (the addon's `__test` export): the virtio-blk device model over plain anonymous
// memory, the snapshot writer's zero-page decision and the snapshot reader, none of which needs /dev/kvm.
// Guest rings and snapshot files are untrusted input; these let tests feed hostile ones on any Linux host.
#include "testing.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <atomic>
#include <memory>
#include "devices/virtio_blk.h"
#include "host/args.h"
#include "host/control.h"
#include "host/files.h"
#include "host/json.h"
#include "napi_errors.h"
#include "snapshot/snapshot.h"
#include "vstate/memory.h"
#include "vstate/vm.h"

namespace vmdesk {

namespace {

#define TEST_GUARD(env, body)          \
  try {                                \
    body                               \
  } catch (const Napi::Error&) {       \
    throw;                             \
  } catch (const std::exception& e) {  \
    throw toJsError(env, e);           \
  }

uint64_t u64Arg(Napi::Env env, Napi::Value v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(what) + " does not fit in 64 bits");
    return r;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != double(uint64_t(d))) throw Napi::RangeError::New(env, std::string(what) + " must be a non-negative integer");
  return uint64_t(d);
}

std::vector<DiskConfig> disksArg(Napi::Value v) {
  std::vector<DiskConfig> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object d = a.Get(i).As<Napi::Object>();
    out.push_back({d.Get("path").As<Napi::String>().Utf8Value(), d.Get("readOnly").ToBoolean().Value()});
  }
  return out;
}

// A virtio-blk device on anonymous guest memory, driven the way a vCPU's MMIO exits drive it.
class TestVirtioBlk : public Napi::ObjectWrap<TestVirtioBlk> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TestVirtioBlk", {
      InstanceMethod("writeMem", &TestVirtioBlk::WriteMem),
      InstanceMethod("readMem", &TestVirtioBlk::ReadMem),
      InstanceMethod("mmioWrite", &TestVirtioBlk::MmioWrite),
      InstanceMethod("mmioRead", &TestVirtioBlk::MmioRead),
      InstanceMethod("saveState", &TestVirtioBlk::SaveState),
      InstanceMethod("loadState", &TestVirtioBlk::LoadState),
      InstanceMethod("irqCount", &TestVirtioBlk::IrqCount),
    });
  }

  TestVirtioBlk(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TestVirtioBlk>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "virtioBlk({memBytes, disk, readOnly?})");
    Napi::Object o = info[0].As<Napi::Object>();
    uint64_t memBytes = u64Arg(env, o.Get("memBytes"), "memBytes");
    if (memBytes == 0 || memBytes % 4096 != 0 || memBytes > (1ull << 30)) throw Napi::RangeError::New(env, "memBytes: whole pages, at most 1 GiB");
    if (!o.Get("disk").IsString()) throw Napi::TypeError::New(env, "disk must be a path");
    irqs_ = std::make_shared<std::atomic<uint32_t>>(0);
    auto irqs = irqs_;
    TEST_GUARD(env, {
      mem_ = std::make_unique<GuestMemory>();
      mem_->allocate(memBytes);
      dev_ = std::make_unique<VirtioBlk>(*mem_, o.Get("disk").As<Napi::String>().Utf8Value(), o.Get("readOnly").ToBoolean().Value(),
                                         VirtioBlk::kMmioBase, VirtioBlk::kFirstIrq, [irqs](uint32_t) { (*irqs)++; });
    })
  }

 private:
  uint8_t* range(Napi::Env env, uint64_t gpa, uint64_t len) {
    uint8_t* p = mem_->ptr(gpa, len);
    if (!p) throw Napi::RangeError::New(env, "guest range outside memory");
    return p;
  }
  uint64_t offset(const Napi::CallbackInfo& info) {
    uint64_t off = u64Arg(info.Env(), info[0], "offset");
    if (off + 4 > VirtioBlk::kMmioSize) throw Napi::RangeError::New(info.Env(), "offset outside the device's MMIO window");
    return off;
  }
  Napi::Value WriteMem(const Napi::CallbackInfo& info) {
    uint64_t gpa = u64Arg(info.Env(), info[0], "gpa");
    if (!info[1].IsBuffer()) throw Napi::TypeError::New(info.Env(), "writeMem(gpa, buffer)");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    std::memcpy(range(info.Env(), gpa, b.Length()), b.Data(), b.Length());
    return info.Env().Undefined();
  }
  Napi::Value ReadMem(const Napi::CallbackInfo& info) {
    uint64_t gpa = u64Arg(info.Env(), info[0], "gpa"), len = u64Arg(info.Env(), info[1], "len");
    return Napi::Buffer<uint8_t>::Copy(info.Env(), range(info.Env(), gpa, len), len);
  }
  Napi::Value MmioWrite(const Napi::CallbackInfo& info) {
    uint64_t off = offset(info);
    uint32_t v = uint32_t(u64Arg(info.Env(), info[1], "value"));
    TEST_GUARD(info.Env(), dev_->write(off, reinterpret_cast<const uint8_t*>(&v), 4);)
    return info.Env().Undefined();
  }
  Napi::Value MmioRead(const Napi::CallbackInfo& info) {
    uint64_t off = offset(info);
    uint32_t v = 0;
    TEST_GUARD(info.Env(), dev_->read(off, reinterpret_cast<uint8_t*>(&v), 4);)
    return Napi::Number::New(info.Env(), v);
  }
  Napi::Value SaveState(const Napi::CallbackInfo& info) {
    std::string s = dev_->saveState();
    return Napi::Buffer<char>::Copy(info.Env(), s.data(), s.size());
  }
  Napi::Value LoadState(const Napi::CallbackInfo& info) {
    if (!info[0].IsBuffer()) throw Napi::TypeError::New(info.Env(), "loadState(buffer)");
    auto b = info[0].As<Napi::Buffer<char>>();
    TEST_GUARD(info.Env(), dev_->loadState(std::string(b.Data(), b.Length()));)
    return info.Env().Undefined();
  }
  Napi::Value IrqCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(irqs_->load())); }

  std::unique_ptr<GuestMemory> mem_;  // declared before dev_, which refers to it, so it is destroyed after
  std::unique_ptr<VirtioBlk> dev_;
  std::shared_ptr<std::atomic<uint32_t>> irqs_;
};

// pageHasData(page, pagemapEntry, anonymous): the snapshot writer's decision for one page.
Napi::Value PageHasData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer() || info[0].As<Napi::Buffer<uint8_t>>().Length() != 4096) throw Napi::TypeError::New(env, "pageHasData(4 KiB buffer, entry, anonymous)");
  return Napi::Boolean::New(env, pageHasData(info[0].As<Napi::Buffer<uint8_t>>().Data(), u64Arg(env, info[1], "entry"), info[2].ToBoolean().Value()));
}

// snapshotMemory(path, {memBytes, writes: [{gpa, data}], pageOut?}): fresh anonymous guest memory as a booted
// VM has it, the given writes, optionally pushed out to swap, then saved by the real snapshot writer.
Napi::Value SnapshotMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsObject()) throw Napi::TypeError::New(env, "snapshotMemory(path, {memBytes, writes, pageOut?})");
  Napi::Object o = info[1].As<Napi::Object>();
  uint64_t memBytes = u64Arg(env, o.Get("memBytes"), "memBytes");
  if (memBytes % 4096 != 0 || memBytes > (4ull << 30)) throw Napi::RangeError::New(env, "memBytes: whole pages, at most 4 GiB");
  GuestMemory mem;
  uint64_t bytes = 0, swapped = 0;
  TEST_GUARD(env, {
    mem.allocate(memBytes);
    if (o.Get("writes").IsArray()) {
      Napi::Array w = o.Get("writes").As<Napi::Array>();
      for (uint32_t i = 0; i < w.Length(); i++) {
        Napi::Object e = w.Get(i).As<Napi::Object>();
        auto data = e.Get("data").As<Napi::Buffer<uint8_t>>();
        uint8_t* p = mem.ptr(u64Arg(env, e.Get("gpa"), "gpa"), data.Length());
        if (!p) throw Napi::RangeError::New(env, "write outside guest memory");
        std::memcpy(p, data.Data(), data.Length());
      }
    }
    if (o.Get("pageOut").ToBoolean().Value()) {
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
      for (const MemRegion& r : mem.regions()) madvise(r.host, r.size, MADV_PAGEOUT);
      Fd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
      for (const MemRegion& r : mem.regions()) {
        for (uint64_t p = 0; pm.valid() && p < r.size / 4096; p++) {
          uint64_t e = 0;
          if (pread(pm.get(), &e, 8, off_t(reinterpret_cast<uintptr_t>(r.host + p * 4096) / 4096 * 8)) == 8 && (e >> 62 & 1)) swapped++;
        }
      }
    }
    StateBlob b;
    b.put("test", std::string("memory only"));
    bytes = writeSnapshot(info[0].As<Napi::String>().Utf8Value(), b, mem, true);
  })
  Napi::Object r = Napi::Object::New(env);
  r.Set("bytes", double(bytes));
  r.Set("swappedPages", double(swapped));
  return r;
}

// writeSyntheticSnapshot(path, {cpus, memBytes, disks}): a structurally valid snapshot for tests to corrupt.
Napi::Value WriteSyntheticSnapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsObject()) throw Napi::TypeError::New(env, "writeSyntheticSnapshot(path, {cpus, memBytes, disks})");
  Napi::Object o = info[1].As<Napi::Object>();
  uint64_t cpus = u64Arg(env, o.Get("cpus"), "cpus"), memBytes = u64Arg(env, o.Get("memBytes"), "memBytes");
  if (memBytes > (1ull << 30)) throw Napi::RangeError::New(env, "memBytes: at most 1 GiB");
  TEST_GUARD(env, {
    GuestMemory mem;
    mem.allocate(memBytes);
    writeSnapshot(info[0].As<Napi::String>().Utf8Value(), syntheticSnapshotState(uint32_t(cpus), memBytes, disksArg(o.Get("disks"))), mem, true);
  })
  return env.Undefined();
}

// checkSnapshot(path, disks?): everything a restore checks before it needs KVM; returns what it would create.
Napi::Value CheckSnapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "checkSnapshot(path, disks?)");
  std::vector<DiskConfig> disks = disksArg(info[1]);
  RestoreConfig cfg;
  TEST_GUARD(env, cfg = Vm::checkRestore(info[0].As<Napi::String>().Utf8Value(), &disks);)
  Napi::Object r = Napi::Object::New(env);
  r.Set("cpus", cfg.cpus);
  r.Set("memBytes", double(cfg.memBytes));
  Napi::Array d = Napi::Array::New(env, cfg.disks.size());
  for (size_t i = 0; i < cfg.disks.size(); i++) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("path", cfg.disks[i].path);
    e.Set("readOnly", cfg.disks[i].readOnly);
    d.Set(uint32_t(i), e);
  }
  r.Set("disks", d);
  return r;
}

// ---- vmdesk-microvm's pieces that need no KVM: argv, the control protocol's input side, JSON, records ----

std::vector<std::string> stringArray(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

// hostArgs(argv): parseHostArgs as the executable runs it; throws with code EINVAL.
Napi::Value HostArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> argv = stringArray(env, info[0], "hostArgs(argv)");
  host::HostArgs a;
  TEST_GUARD(env, a = host::parseHostArgs(argv);)
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpus", a.cpus);
  o.Set("memoryMiB", double(a.memoryMiB));
  o.Set("kernel", a.kernel);
  o.Set("initrd", a.initrd);
  o.Set("cmdline", a.cmdline);
  Napi::Array disks = Napi::Array::New(env, a.disks.size());
  for (size_t i = 0; i < a.disks.size(); i++) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("path", a.disks[i].path);
    d.Set("readOnly", a.disks[i].readOnly);
    disks.Set(uint32_t(i), d);
  }
  o.Set("disks", disks);
  o.Set("restore", a.restore);
  o.Set("paused", a.paused);
  o.Set("control", a.control);
  o.Set("serial", a.serial);
  o.Set("serialLog", a.serialLog);
  o.Set("exitRecord", a.exitRecord);
  o.Set("record", a.record);
  o.Set("vmId", a.vmId);
  o.Set("accelReason", a.accelReason);
  o.Set("readyFd", a.readyFd);
  o.Set("help", a.help);
  o.Set("version", a.version);
  return o;
}

// controlInput(chunks): feeds the chunks (Buffers, as they might arrive on the socket) through the same
// framing and parsing a control connection uses; returns, in order, the requests that would run
// ({request: {id, cmd, path, number}}) and the error replies that would be sent ({reply: line}).
Napi::Value ControlInput(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "controlInput(chunks: Buffer[])");
  Napi::Array chunks = info[0].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  host::LineReader reader;
  for (uint32_t i = 0; i < chunks.Length(); i++) {
    Napi::Value c = chunks.Get(i);
    if (!c.IsBuffer()) throw Napi::TypeError::New(env, "controlInput(chunks: Buffer[])");
    auto b = c.As<Napi::Buffer<char>>();
    host::consumeControlInput(
        reader, b.Data(), b.Length(),
        [&](const host::Request& r) {
          Napi::Object req = Napi::Object::New(env);
          req.Set("id", double(r.id));
          req.Set("cmd", host::cmdName(r.cmd));
          req.Set("path", r.path);
          req.Set("number", double(r.number));
          Napi::Object e = Napi::Object::New(env);
          e.Set("request", req);
          out.Set(n++, e);
        },
        [&](const std::string& reply) {
          Napi::Object e = Napi::Object::New(env);
          e.Set("reply", Napi::Buffer<char>::Copy(env, reply.data(), reply.size()));
          out.Set(n++, e);
        });
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("items", out);
  r.Set("buffered", double(reader.buffered()));
  return r;
}

// jsonString(bytes): the JSON literal the executable writes for arbitrary bytes (guest output, paths).
Napi::Value JsonString(const Napi::CallbackInfo& info) {
  if (!info[0].IsBuffer()) throw Napi::TypeError::New(info.Env(), "jsonString(buffer)");
  auto b = info[0].As<Napi::Buffer<char>>();
  std::string s = host::jsonString(std::string_view(b.Data(), b.Length()));
  return Napi::Buffer<char>::Copy(info.Env(), s.data(), s.size());
}

// exitRecord(chunks, {reason, detail}): guest output through the tail the executable keeps, and the exit
// record JSON it would write.
Napi::Value ExitRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || !info[1].IsObject()) throw Napi::TypeError::New(env, "exitRecord(chunks: Buffer[], {reason, detail})");
  Napi::Array chunks = info[0].As<Napi::Array>();
  host::OutputTail tail;
  for (uint32_t i = 0; i < chunks.Length(); i++) {
    Napi::Value c = chunks.Get(i);
    if (!c.IsBuffer()) throw Napi::TypeError::New(env, "chunks must be Buffers");
    auto b = c.As<Napi::Buffer<char>>();
    tail.append(b.Data(), b.Length());
  }
  Napi::Object o = info[1].As<Napi::Object>();
  host::ExitRecordData r;
  r.at = host::isoNow();
  r.reason = o.Get("reason").ToString().Utf8Value();
  r.detail = o.Get("detail").ToString().Utf8Value();
  r.logTail = tail.lines(20);
  std::string s = host::exitRecordJson(r);
  return Napi::Buffer<char>::Copy(env, s.data(), s.size());
}

Napi::Value ExitStatusFor(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), host::exitStatusFor(info[0].ToString().Utf8Value()));
}

Napi::Value ProcessStartTime(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), host::processStartTime(pid_t(info[0].ToNumber().Int32Value())));
}

}  // namespace

Napi::Object testHooks(Napi::Env env) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("VirtioBlk", TestVirtioBlk::Define(env));
  t.Set("pageHasData", Napi::Function::New(env, PageHasData));
  t.Set("snapshotMemory", Napi::Function::New(env, SnapshotMemory));
  t.Set("writeSyntheticSnapshot", Napi::Function::New(env, WriteSyntheticSnapshot));
  t.Set("checkSnapshot", Napi::Function::New(env, CheckSnapshot));
  t.Set("hostArgs", Napi::Function::New(env, HostArgs));
  t.Set("controlInput", Napi::Function::New(env, ControlInput));
  t.Set("jsonString", Napi::Function::New(env, JsonString));
  t.Set("exitRecord", Napi::Function::New(env, ExitRecord));
  t.Set("exitStatusFor", Napi::Function::New(env, ExitStatusFor));
  t.Set("processStartTime", Napi::Function::New(env, ProcessStartTime));
  return t;
}

}  // namespace vmdesk
