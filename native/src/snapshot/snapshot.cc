// Snapshot file writing and validation (see snapshot.h).
#include "snapshot/snapshot.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ctime>
#include <vector>

namespace vmdesk {

namespace {
constexpr char kMagic[8] = {'V', 'M', 'D', 'S', 'N', 'A', 'P', 0};
constexpr uint64_t kPage = 4096;
uint64_t alignUp(uint64_t v) { return (v + kPage - 1) & ~(kPage - 1); }

bool pageIsZero(const uint8_t* p) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / 8; i += 8) {
    if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) return false;
  }
  return true;
}
}  // namespace

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
    if (d.size() - pos < 4) throw invalid("snapshot state is corrupt");
    std::memcpy(&kl, d.data() + pos, 4);
    pos += 4;
    if (d.size() - pos < uint64_t(kl) + 8) throw invalid("snapshot state is corrupt");
    std::string k = d.substr(pos, kl);
    pos += kl;
    std::memcpy(&vl, d.data() + pos, 8);
    pos += 8;
    if (d.size() - pos < vl) throw invalid("snapshot state is corrupt");
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
    std::vector<unsigned char> resident;
    for (const MemRegion& r : mem.regions()) {
      uint64_t pages = r.size / kPage;
      if (anonymousMemory) {
        // Never-touched anonymous pages are zero; mincore() finds them without faulting each one in.
        resident.assign(pages, 1);
        if (mincore(r.host, r.size, resident.data()) != 0) resident.assign(pages, 1);
      }
      uint64_t i = 0;
      while (i < pages) {
        auto nonZero = [&](uint64_t p) { return (!anonymousMemory || (resident[p] & 1)) && !pageIsZero(r.host + p * kPage); };
        if (!nonZero(i)) { i++; continue; }
        uint64_t j = i + 1;
        while (j < pages && j - i < 2048 && nonZero(j)) j++;
        uint64_t len = (j - i) * kPage;
        const uint8_t* src = r.host + i * kPage;
        off_t at = off_t(h.memOffset + r.fileOffset + i * kPage);
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
  if (h.memOffset % kPage != 0 || h.memOffset < kPage + h.stateBytes || uint64_t(st.st_size) < h.memOffset + h.memBytes) {
    throw invalid("snapshot " + path + " is truncated or corrupt (size " + std::to_string(st.st_size) + ")");
  }
  std::string blob(h.stateBytes, '\0');
  if (pread(s.fd.get(), blob.data(), blob.size(), off_t(kPage)) != ssize_t(blob.size())) throw sysError("read snapshot state");
  if (crc32(blob.data(), blob.size()) != h.stateCrc) throw invalid("snapshot " + path + " state checksum mismatch: the file is corrupt");
  s.state = StateBlob::parse(blob);
  return s;
}

}  // namespace vmdesk
