# Builds the VMDesk micro-VMM: the VMM sources as one static library (Linux/KVM), linked into the N-API addon
# (probe, self-test, in-process VMs for tests, flock) and into vmdesk-microvm, the per-VM executable the
# micro-VM engine runs. A macOS build has the addon only (flock; Hypervisor.framework is not supported yet).
{
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
    "ldflags": ["-pthread"],
    "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "GCC_ENABLE_CPP_RTTI": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
  },
  "targets": [
    {
      "target_name": "vmdesk_native",
      "sources": ["src/addon.cc"],
      "conditions": [
        ["OS=='linux'", {
          "dependencies": ["vmdesk_vmm"],
          "sources": ["src/testing.cc"]
        }, {
          "sources": ["src/common.cc"]
        }]
      ]
    }
  ],
  "conditions": [
    ["OS=='linux'", {
      "targets": [
        {
          "target_name": "vmdesk_vmm",
          "type": "static_library",
          # Linked into a shared object (the addon) as well as the executable.
          "cflags": ["-fPIC"],
          "sources": [
            "src/common.cc",
            "src/kvm/kvm.cc",
            "src/kvm/selftest.cc",
            "src/arch/x86_boot.cc",
            "src/devices/serial.cc",
            "src/devices/i8042.cc",
            "src/devices/virtio_blk.cc",
            "src/vstate/vm.cc",
            "src/vstate/memory.cc",
            "src/snapshot/snapshot.cc",
            "src/host/args.cc",
            "src/host/control.cc",
            "src/host/files.cc",
            "src/host/json.cc"
          ]
        },
        {
          "target_name": "vmdesk-microvm",
          "type": "executable",
          "dependencies": ["vmdesk_vmm"],
          "sources": ["src/host/main.cc", "src/host/host.cc"]
        }
      ]
    }]
  ]
}
