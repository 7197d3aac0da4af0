// KVM structures with flexible arrays, declared for C++. Some distributions' uapi headers (Debian 12)
// expand __DECLARE_FLEX_ARRAY to a non-empty struct in C++, which shifts the array and changes the ioctl
// numbers; these definitions match the kernel ABI (and the C headers) exactly.
#pragma once
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <cstdint>

namespace vmdesk {

struct KvmCpuid2Header { uint32_t nent, padding; };           // followed by kvm_cpuid_entry2[nent]
struct KvmMsrsHeader { uint32_t nmsrs, pad; };               // followed by kvm_msr_entry[nmsrs]
struct KvmMsrListHeader { uint32_t nmsrs; };                 // followed by uint32_t[nmsrs]
struct KvmXsave { uint32_t region[1024]; };                  // legacy 4 KiB XSAVE area

constexpr unsigned long kKvmGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, sizeof(KvmCpuid2Header));
constexpr unsigned long kKvmSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, sizeof(KvmCpuid2Header));
constexpr unsigned long kKvmGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, sizeof(KvmMsrsHeader));
constexpr unsigned long kKvmSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, sizeof(KvmMsrsHeader));
constexpr unsigned long kKvmGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, sizeof(KvmMsrListHeader));
constexpr unsigned long kKvmGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, sizeof(KvmXsave));
constexpr unsigned long kKvmSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, sizeof(KvmXsave));

static_assert(sizeof(kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 ABI");
static_assert(sizeof(kvm_msr_entry) == 16, "kvm_msr_entry ABI");

}  // namespace vmdesk
