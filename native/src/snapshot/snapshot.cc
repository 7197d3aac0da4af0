// Snapshot file writing and validation (see snapshot.h).
#include "snapshot/snapshot.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <algorithm>
#include <ctime>
#include <vector>

namespace vmdesk {

namespace {
constexpr char kMagic[8] = {'V', 'M', 'D', 'S', 'N', 'A', 'P', 0};
constexpr uint64_t kPage = 4096;
// /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
constexpr uint64_t kPagemapPresent = 1ull << 63, kPagemapSwapped = 1ull << 62;
constexpr uint64_t kPagemapBatch = 65536;  // entries per read: 512 KiB covering 256 MiB of guest memory
uint64_t alignUp(uint64_t v) { return (v + kPage - 1) & ~(kPage - 1); }

// pagemap entries for [host, host + pages * 4 KiB). When they cannot be read every page is reported
// present, so the content check decides alone: slower, never wrong.
void readPagemap(int fd, const uint8_t* host, uint64_t pages, uint64_t* out) {
  uint64_t want = pages * 8;
  ssize_t n = -1;
  if (fd >= 0) {
    do n = pread(fd, out, want, off_t(reinterpret_cast<uintptr_t>(host) / kPage * 8));
    while (n < 0 && errno == EINTR);
  }
  if (n != ssize_t(want)) std::fill(out, out + pages, kPagemapPresent);
}

bool pageIsZero(const uint8_t* p) {
  uint64_t w[8];
  for (size_t i = 0; i < kPage; i += sizeof w) {
    std::memcpy(w, p + i, sizeof w);
    if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) return false;
  }
  return true;
}

// Residency is no evidence of zero: mincore() reports swapped-out pages as not resident just like
// never-touched ones, and skipping them saved swapped guest pages as zeros. pagemap tells the two apart.
// A file-backed (restored) mapping reads its unpopulated pages from the snapshot, so there every page counts.
bool pageMayHoldData(uint64_t entry, bool anonymousMemory) {
  return !anonymousMemory || (entry & (kPagemapPresent | kPagemapSwapped)) != 0;
}
}  // namespace

bool pageHasData(const uint8_t* page, uint64_t pagemapEntry, bool anonymousMemory) {
  return pageMayHoldData(pagemapEntry, anonymousMemory) && !pageIsZero(page);
}

const std::string& StateBlob::get(const std::string& key) const {
  auto it = items_.find(key);
  if (it == items_.end()) throw invalid("snapshot is missing record '" + key + "'");
  return it->second;
}

std::string StateBlob::serialize() const {
  std::string out;
  for (auto& [k, v] : items_) {
    uint32_t kl = uint32_t(k.size());
    uint64_t vl = v.size();
    out.append(reinterpret_cast<const char*>(&kl), 4).append(k).append(reinterpret_cast<const char*>(&vl), 8).append(v);
  }
  return out;
}

StateBlob StateBlob::parse(const std::string& d) {
  StateBlob b;
  size_t pos = 0;
  while (pos < d.size()) {
    uint32_t kl;
    uint64_t vl;
    if (d.size() - pos < 4) throw invalid("snapshot state is corrupt: a record is cut off after " + std::to_string(pos) + " bytes");
    std::memcpy(&kl, d.data() + pos, 4);
    pos += 4;
    if (kl == 0 || kl > kMaxRecordKeyBytes || d.size() - pos < uint64_t(kl) + 8) {
      throw invalid("snapshot state is corrupt: record name length " + std::to_string(kl) + " at byte " + std::to_string(pos - 4));
    }
    std::string k = d.substr(pos, kl);
    pos += kl;
    std::memcpy(&vl, d.data() + pos, 8);
    pos += 8;
    if (d.size() - pos < vl) throw invalid("snapshot state is corrupt: record '" + k + "' claims " + std::to_string(vl) + " bytes, " + std::to_string(d.size() - pos) + " remain");
    if (b.items_.count(k)) throw invalid("snapshot state is corrupt: record '" + k + "' appears twice");
    b.items_[k] = d.substr(pos, vl);
    pos += vl;
  }
  return b;
}

uint64_t writeSnapshot(const std::string& path, const StateBlob& state, const GuestMemory& mem, bool anonymousMemory) {
  std::string blob = state.serialize();
  SnapshotHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kSnapshotVersion;
  h.headerBytes = sizeof h;
  h.memBytes = mem.total();
  h.stateBytes = blob.size();
  h.memOffset = alignUp(kPage + blob.size());
  h.stateCrc = crc32(blob.data(), blob.size());
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  h.createdNanos = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  h.headerCrc = 0;
  h.headerCrc = crc32(&h, sizeof h);

  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) throw sysError("cannot create snapshot " + tmp);
  try {
    std::vector<uint8_t> first(kPage, 0);
    std::memcpy(first.data(), &h, sizeof h);
    writeAll(fd.get(), first.data(), first.size(), "snapshot header");
    writeAll(fd.get(), blob.data(), blob.size(), "snapshot state");
    // The file is sized first and only non-zero pages are written: untouched guest memory stays a hole,
    // which keeps snapshots of mostly idle guests small and fast.
    if (ftruncate(fd.get(), off_t(h.memOffset + h.memBytes)) != 0) throw sysError("size snapshot file");
    uint64_t written = 0;
    Fd pagemap(anonymousMemory ? ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) : -1);
    std::vector<uint64_t> entries(kPagemapBatch);
    for (const MemRegion& r : mem.regions()) {
      uint64_t pages = r.size / kPage;
      for (uint64_t base = 0; base < pages; base += kPagemapBatch) {
        uint64_t count = std::min(kPagemapBatch, pages - base);
        if (anonymousMemory) readPagemap(pagemap.get(), r.host + base * kPage, count, entries.data());
        auto hasData = [&](uint64_t p) { return pageHasData(r.host + (base + p) * kPage, entries[p], anonymousMemory); };
        uint64_t i = 0;
        while (i < count) {
          if (!hasData(i)) { i++; continue; }
          uint64_t j = i + 1;
          while (j < count && j - i < 2048 && hasData(j)) j++;
          uint64_t len = (j - i) * kPage;
          const uint8_t* src = r.host + (base + i) * kPage;
          off_t at = off_t(h.memOffset + r.fileOffset + (base + i) * kPage);
          while (len > 0) {
            ssize_t n = pwrite(fd.get(), src, len, at);
            if (n < 0) {
              if (errno == EINTR) continue;
              throw sysError("write snapshot memory");
            }
            src += n; at += n; len -= uint64_t(n); written += uint64_t(n);
          }
          i = j;
        }
      }
    }
    if (fsync(fd.get()) != 0) throw sysError("fsync snapshot");
    fd.reset();
    if (rename(tmp.c_str(), path.c_str()) != 0) throw sysError("rename snapshot into place");
    return h.memOffset + written;
  } catch (...) {
    unlink(tmp.c_str());
    throw;
  }
}

OpenedSnapshot openSnapshot(const std::string& path) {
  OpenedSnapshot s;
  s.fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s.fd.valid()) throw sysError("cannot open snapshot " + path, "EINVAL");
  struct stat st;
  if (fstat(s.fd.get(), &st) != 0) throw sysError("stat snapshot");
  if (uint64_t(st.st_size) < sizeof(SnapshotHeader)) throw invalid("snapshot " + path + " is truncated");
  readAll(s.fd.get(), &s.header, sizeof s.header, "snapshot header");
  SnapshotHeader& h = s.header;
  if (std::memcmp(h.magic, kMagic, 8) != 0) throw invalid(path + " is not a VMDesk micro-VM snapshot (bad magic)");
  if (h.version != kSnapshotVersion) {
    throw invalid("snapshot " + path + " has format version " + std::to_string(h.version) + "; this build reads version " + std::to_string(kSnapshotVersion));
  }
  uint32_t crc = h.headerCrc;
  h.headerCrc = 0;
  bool headerOk = crc32(&h, sizeof h) == crc;
  h.headerCrc = crc;
  if (!headerOk || h.headerBytes != sizeof h) throw invalid("snapshot " + path + " header checksum mismatch: the file is corrupt");
  // The checksum only proves the header was written as it is; its sizes are still checked one by one and
  // without sums that could wrap.
  uint64_t size = uint64_t(st.st_size);
  if (h.stateBytes > kMaxStateBytes) {
    throw invalid("snapshot " + path + " is corrupt: its state claims " + std::to_string(h.stateBytes) + " bytes (at most " + std::to_string(kMaxStateBytes) + ")");
  }
  if (h.memOffset % kPage != 0 || h.memOffset < kPage || h.memOffset - kPage < h.stateBytes || h.memOffset > size) {
    throw invalid("snapshot " + path + " is corrupt: memory offset " + std::to_string(h.memOffset) + " does not follow its state in a file of " + std::to_string(size) + " bytes");
  }
  if (h.memBytes % kPage != 0 || h.memBytes < kMinMemBytes || h.memBytes > kMaxMemBytes) {
    throw invalid("snapshot " + path + " is corrupt: guest memory size " + std::to_string(h.memBytes) + " is not a whole number of pages between 16 MiB and 1 TiB");
  }
  if (size - h.memOffset < h.memBytes) {
    throw invalid("snapshot " + path + " is truncated: " + std::to_string(size) + " bytes, its memory ends at " + std::to_string(h.memOffset) + " + " + std::to_string(h.memBytes));
  }
  std::string blob(h.stateBytes, '\0');
  ssize_t n = pread(s.fd.get(), blob.data(), blob.size(), off_t(kPage));
  if (n < 0) throw sysError("read snapshot state");
  if (n != ssize_t(blob.size())) throw invalid("snapshot " + path + " is truncated inside its state");
  if (crc32(blob.data(), blob.size()) != h.stateCrc) throw invalid("snapshot " + path + " state checksum mismatch: the file is corrupt");
  s.state = StateBlob::parse(blob);
  return s;
}

}  // namespace vmdesk
