# Builds the VMDesk micro-VMM addon (Linux/KVM; a macOS build only reports Hypervisor.framework availability).
{
  "targets": [
    {
      "target_name": "vmdesk_native",
      "sources": [
        "src/addon.cc",
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
        "src/testing.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["OS=='mac'", {
          "sources!": [
            "src/kvm/kvm.cc", "src/kvm/selftest.cc", "src/arch/x86_boot.cc", "src/devices/serial.cc",
            "src/devices/i8042.cc", "src/devices/virtio_blk.cc", "src/vstate/vm.cc",
            "src/vstate/memory.cc", "src/snapshot/snapshot.cc", "src/testing.cc"
          ],
          "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
        }]
      ]
    }
  ]
}
