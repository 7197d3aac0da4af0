// Test-only entry points, exported as `__test` on Linux. Nothing in the app calls them.
#pragma once
#include <napi.h>

namespace vmdesk {
Napi::Object testHooks(Napi::Env env);
}
