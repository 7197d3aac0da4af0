// How C++ exceptions become JavaScript errors: a VmError keeps its VMDesk code (main/api/errors.ts), so the
// TypeScript side can rethrow it unchanged; anything else is an engine failure.
#pragma once
#include <napi.h>
#include <exception>
#include "common.h"

namespace vmdesk {

inline Napi::Error toJsError(Napi::Env env, const std::exception& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  if (auto* ve = dynamic_cast<const VmError*>(&e)) err.Set("code", Napi::String::New(env, ve->code));
  else err.Set("code", Napi::String::New(env, "EENGINE"));
  return err;
}

}  // namespace vmdesk
