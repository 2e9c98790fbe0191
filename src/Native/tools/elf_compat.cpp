// qatml_elf_compat: makes a shared library built against a newer libstdc++ (TorchSharp 0.107's
// libLibTorchSharp.so wants GLIBCXX_3.4.32 from GCC 13) loadable on a host whose libstdc++ is older
// (Debian 12 / Ubuntu 22.04 stop at GLIBCXX_3.4.30). See DEVELOPERS.md for the diagnosis.
//
// For each libstdc++ version the target requires that the host's libstdc++ does not define:
//   1. every dynamic symbol bound to that version must be unreferenced by any relocation (GCC 13's
//      <iostream> only emits `.globl _ZSt21ios_base_library_initv` to force a link against the new
//      library; nothing calls it). If one is referenced the tool refuses: the library truly needs it.
//   2. those symbols' version index is cleared to VER_NDX_GLOBAL;
//   3. the version requirement (Vernaux) is marked VER_FLG_WEAK, so ld.so no longer refuses the file.
// The edited file is written beside the target and renamed over it (never half-written). Running
// it again is a no-op. Usage:
//   qatml_elf_compat [--check] <library.so>
// Exit codes: 0 done / nothing needed (--check: 0 = no patch needed, 3 = patch needed), 1 error.
#include <dlfcn.h>
#include <sys/stat.h>
#include <elf.h>
#include <link.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Elf {
    std::string path;
    std::vector<unsigned char> bytes;

    const Elf64_Ehdr& header() const { return *reinterpret_cast<const Elf64_Ehdr*>(bytes.data()); }

    template <typename T>
    T* at(uint64_t offset, uint64_t count = 1) {
        if (offset > bytes.size() || count > (bytes.size() - offset) / sizeof(T))
            throw std::runtime_error(path + ": truncated or corrupt ELF (offset " + std::to_string(offset) + ")");
        return reinterpret_cast<T*>(bytes.data() + offset);
    }

    std::vector<Elf64_Shdr*> sections() {
        const Elf64_Ehdr& h = header();
        if (h.e_shentsize != sizeof(Elf64_Shdr)) throw std::runtime_error(path + ": unexpected section header size");
        Elf64_Shdr* first = at<Elf64_Shdr>(h.e_shoff, h.e_shnum);
        std::vector<Elf64_Shdr*> out;
        for (int i = 0; i < h.e_shnum; ++i) out.push_back(first + i);
        return out;
    }

    Elf64_Shdr* find_section(uint32_t type) {
        for (Elf64_Shdr* s : sections())
            if (s->sh_type == type) return s;
        return nullptr;
    }

    const char* string_at(const Elf64_Shdr* strtab, uint64_t index) {
        if (index >= strtab->sh_size) throw std::runtime_error(path + ": string index out of range");
        const char* s = at<char>(strtab->sh_offset + index);
        if (std::memchr(s, 0, strtab->sh_size - index) == nullptr) throw std::runtime_error(path + ": unterminated string");
        return s;
    }
};

Elf read_elf(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    Elf e{path, std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {})};
    if (e.bytes.size() < sizeof(Elf64_Ehdr) || std::memcmp(e.bytes.data(), ELFMAG, SELFMAG) != 0 ||
        e.bytes[EI_CLASS] != ELFCLASS64 || e.bytes[EI_DATA] != ELFDATA2LSB)
        throw std::runtime_error(path + ": not a 64-bit little-endian ELF file");
    return e;
}

// Version names the host's libstdc++ defines (its SHT_GNU_verdef section).
std::set<std::string> host_libstdcxx_versions(std::string* host_path) {
    void* handle = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) handle = dlopen("libstdc++.so.6", RTLD_LAZY);
    if (handle == nullptr) throw std::runtime_error(std::string("cannot load the host libstdc++.so.6: ") + dlerror());
    link_map* map = nullptr;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr || map->l_name == nullptr)
        throw std::runtime_error("cannot locate the host libstdc++.so.6");
    *host_path = map->l_name;
    Elf lib = read_elf(*host_path);
    Elf64_Shdr* verdef = lib.find_section(SHT_GNU_verdef);
    if (verdef == nullptr) throw std::runtime_error(*host_path + ": no version definitions");
    Elf64_Shdr* strtab = lib.sections().at(verdef->sh_link);
    std::set<std::string> names;
    uint64_t offset = verdef->sh_offset;
    for (uint64_t i = 0; i < verdef->sh_info; ++i) {
        auto* def = lib.at<Elf64_Verdef>(offset);
        auto* aux = lib.at<Elf64_Verdaux>(offset + def->vd_aux);
        names.insert(lib.string_at(strtab, aux->vda_name));
        if (def->vd_next == 0) break;
        offset += def->vd_next;
    }
    return names;
}

struct MissingVersion {
    Elf64_Vernaux* aux;
    std::string name;
};

int run(bool check_only, const std::string& target) {
    std::string host_path;
    const std::set<std::string> host = host_libstdcxx_versions(&host_path);
    Elf elf = read_elf(target);

    Elf64_Shdr* verneed = elf.find_section(SHT_GNU_verneed);
    Elf64_Shdr* versym = elf.find_section(SHT_GNU_versym);
    Elf64_Shdr* dynsym = elf.find_section(SHT_DYNSYM);
    if (verneed == nullptr || versym == nullptr || dynsym == nullptr) {
        std::printf("qatml_elf_compat: %s has no symbol versioning; nothing to do\n", target.c_str());
        return 0;
    }
    Elf64_Shdr* dynstr = elf.sections().at(verneed->sh_link);

    std::vector<MissingVersion> missing;
    bool already_weak = false;
    uint64_t offset = verneed->sh_offset;
    for (uint64_t i = 0; i < verneed->sh_info; ++i) {
        auto* need = elf.at<Elf64_Verneed>(offset);
        const std::string file = elf.string_at(dynstr, need->vn_file);
        uint64_t aux_offset = offset + need->vn_aux;
        for (uint32_t j = 0; j < need->vn_cnt; ++j) {
            auto* aux = elf.at<Elf64_Vernaux>(aux_offset);
            const std::string name = elf.string_at(dynstr, aux->vna_name);
            if (file == "libstdc++.so.6" && host.count(name) == 0) {
                if (aux->vna_flags & VER_FLG_WEAK)
                    already_weak = true;
                else
                    missing.push_back({aux, name});
            }
            if (aux->vna_next == 0) break;
            aux_offset += aux->vna_next;
        }
        if (need->vn_next == 0) break;
        offset += need->vn_next;
    }

    if (missing.empty()) {
        std::printf("qatml_elf_compat: %s: %s\n", target.c_str(),
                    already_weak ? "already patched" : "host libstdc++ has every version it needs; left untouched");
        return 0;
    }
    std::string names;
    for (auto& m : missing) names += (names.empty() ? "" : ", ") + m.name;
    if (check_only) {
        std::printf("qatml_elf_compat: %s needs %s, which %s lacks: patch needed\n", target.c_str(), names.c_str(),
                    host_path.c_str());
        return 3;
    }

    // Symbols bound to a missing version, and a check that no relocation uses them.
    const uint64_t nsyms = dynsym->sh_size / sizeof(Elf64_Sym);
    auto* syms = elf.at<Elf64_Sym>(dynsym->sh_offset, nsyms);
    auto* vers = elf.at<Elf64_Half>(versym->sh_offset, nsyms);
    std::set<uint64_t> affected;
    for (uint64_t s = 0; s < nsyms; ++s)
        for (auto& m : missing)
            if ((vers[s] & 0x7fff) == m.aux->vna_other) affected.insert(s);
    for (Elf64_Shdr* sec : elf.sections()) {
        if (sec->sh_type != SHT_RELA || sec->sh_link != static_cast<uint32_t>(dynsym - elf.sections()[0])) continue;
        const uint64_t n = sec->sh_size / sizeof(Elf64_Rela);
        auto* rela = elf.at<Elf64_Rela>(sec->sh_offset, n);
        for (uint64_t r = 0; r < n; ++r) {
            const uint64_t sym = ELF64_R_SYM(rela[r].r_info);
            if (affected.count(sym))
                throw std::runtime_error(target + ": symbol '" + elf.string_at(dynstr, syms[sym].st_name) +
                                         "' of a missing libstdc++ version is used by a relocation; clearing its "
                                         "version would not be enough (a compat library would have to define it)");
        }
    }
    for (uint64_t s : affected) {
        std::printf("qatml_elf_compat: clearing version of %s\n", elf.string_at(dynstr, syms[s].st_name));
        vers[s] = 1;  // VER_NDX_GLOBAL
    }
    for (auto& m : missing) m.aux->vna_flags |= VER_FLG_WEAK;

    const std::string temp = target + ".qatml-tmp";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(elf.bytes.data()), static_cast<std::streamsize>(elf.bytes.size()));
        if (!out) throw std::runtime_error("cannot write " + temp);
    }
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0) ::chmod(temp.c_str(), st.st_mode & 07777);  // keep the mode
    if (std::rename(temp.c_str(), target.c_str()) != 0) {
        std::remove(temp.c_str());
        throw std::runtime_error("cannot replace " + target + ": " + std::strerror(errno));
    }
    std::printf("qatml_elf_compat: %s: made %s weak (host %s lacks it)\n", target.c_str(), names.c_str(),
                host_path.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    bool check_only = false;
    std::string target;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--check") == 0)
            check_only = true;
        else
            target = argv[i];
    }
    if (target.empty()) {
        std::fprintf(stderr, "usage: qatml_elf_compat [--check] <library.so>\n");
        return 1;
    }
    try {
        return run(check_only, target);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qatml_elf_compat: error: %s\n", e.what());
        return 1;
    }
}
