// Registry of live opaque handles (see internal.h).
#include "internal.h"

#include <mutex>
#include <unordered_map>

namespace {
std::mutex& registry_mutex() {
    static std::mutex m;
    return m;
}
std::unordered_map<const void*, qatml::HandleKind>& registry() {
    static auto* map = new std::unordered_map<const void*, qatml::HandleKind>();  // never destroyed:
    return *map;  // handles may be released by finalizers after static destruction begins
}
}  // namespace

namespace qatml {

void register_handle(const void* handle, HandleKind kind) {
    std::lock_guard<std::mutex> lock(registry_mutex());
    registry()[handle] = kind;
}

bool unregister_handle(const void* handle, HandleKind kind) {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(handle);
    if (it == registry().end() || it->second != kind) return false;
    registry().erase(it);
    return true;
}

bool is_live_handle(const void* handle, HandleKind kind) {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(handle);
    return it != registry().end() && it->second == kind;
}

}  // namespace qatml
