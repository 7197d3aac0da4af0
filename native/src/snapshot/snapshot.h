// Snapshot file format: a checksummed header and device/vCPU state, then page-aligned guest memory that a
// restore maps copy-on-write instead of reading.
//
//   [SnapshotHeader (4 KiB page)] [state blob: key/value records] [pad to 4 KiB] [guest memory, sparse]
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include "common.h"
#include "vstate/memory.h"

namespace vmdesk {

constexpr uint32_t kSnapshotVersion = 1;
// Far beyond what 255 vCPUs' registers, MSRs and CPUID take; a larger header value is corruption, not state.
constexpr uint64_t kMaxStateBytes = 64ull << 20;
constexpr uint32_t kMaxRecordKeyBytes = 256;

struct SnapshotHeader {
  char magic[8];            // "VMDSNAP\0"
  uint32_t version;         // kSnapshotVersion; older or newer files are refused with a clear message
  uint32_t headerBytes;     // sizeof(SnapshotHeader), for forward compatibility checks
  uint64_t memBytes;
  uint64_t memOffset;       // page-aligned so the memory can be mmapped directly
  uint64_t stateBytes;
  uint32_t stateCrc;        // CRC32 of the state blob
  uint32_t headerCrc;       // CRC32 of this header with headerCrc = 0
  uint64_t createdNanos;    // CLOCK_REALTIME at save, for display only
};

// Key/value records (key length, key, value length, value): order-independent and easy to extend.
class StateBlob {
 public:
  void put(const std::string& key, const void* data, size_t len) { items_[key].assign(static_cast<const char*>(data), len); }
  void put(const std::string& key, const std::string& v) { items_[key] = v; }
  template <typename T> void putPod(const std::string& key, const T& v) { put(key, &v, sizeof v); }
  bool has(const std::string& key) const { return items_.count(key) != 0; }
  const std::string& get(const std::string& key) const;
  template <typename T> T getPod(const std::string& key) const;
  std::string serialize() const;
  static StateBlob parse(const std::string& data);

 private:
  std::map<std::string, std::string> items_;
};

template <typename T>
T StateBlob::getPod(const std::string& key) const {
  const std::string& v = get(key);
  if (v.size() != sizeof(T)) throw invalid("snapshot record '" + key + "' has size " + std::to_string(v.size()) + ", expected " + std::to_string(sizeof(T)));
  T out;
  std::memcpy(&out, v.data(), sizeof(T));
  return out;
}

// The zero-page decision of writeSnapshot: whether a 4 KiB page is written (true) or left a hole. A page
// is a hole only when it is all zero bytes; an anonymous page that was never touched (neither present nor
// swapped out, per its /proc/self/pagemap entry) is zero without being read, which would fault it in.
bool pageHasData(const uint8_t* page, uint64_t pagemapEntry, bool anonymousMemory);

// Writes to path.tmp, fsyncs and renames, so a crash never leaves a half snapshot under the final name and
// a VM restored from `path` can save over it (its mapping keeps the old inode).
uint64_t writeSnapshot(const std::string& path, const StateBlob& state, const GuestMemory& mem, bool anonymousMemory);

struct OpenedSnapshot {
  Fd fd;
  SnapshotHeader header;
  StateBlob state;
};
// Validates magic, version, checksums, sizes and the record framing; throws VmError(EINVAL) otherwise.
// The records' contents are checked by the restore (see Vm::checkRestore).
OpenedSnapshot openSnapshot(const std::string& path);

}  // namespace vmdesk
