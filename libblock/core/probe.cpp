// Format probing as qemu-img 7.2 does it: the same formats recognised, the same scores, so
// the same format wins. Formats libblock has no driver for are still recognised, so that
// their images are refused by name instead of being read as raw bytes (silently wrong data).
#include <cstring>
#include <string_view>

#include "blk/driver.h"
#include "blk/endian.h"

namespace blk {

namespace {

bool starts_with(std::span<const std::byte> buf, size_t off, std::string_view text) {
    return buf.size() >= off + text.size() && std::memcmp(buf.data() + off, text.data(), text.size()) == 0;
}

// A NUL-terminated C string stored at `off` equals `text` (what strcmp on a header field tests).
bool c_string_is(std::span<const std::byte> buf, size_t off, std::string_view text) {
    return starts_with(buf, off, text) && buf.size() > off + text.size() &&
           buf[off + text.size()] == std::byte{0};
}

// VMDK: a sparse extent (magic "KDMV", or "COWD" for VMware 3), or a text descriptor whose
// first line that is neither a comment nor blank is "version=1|2|3" (descriptor files of
// monolithicFlat, twoGbMaxExtent* and friends).
int probe_vmdk(std::span<const std::byte> buf, const std::string&) {
    if (starts_with(buf, 0, "KDMV") || starts_with(buf, 0, "COWD")) return 100;
    const char* p = reinterpret_cast<const char*>(buf.data());
    const char* end = p + buf.size();
    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n') ++p;
            ++p;
            continue;
        }
        if (*p == ' ') {
            // A line of blanks (optionally CRLF-terminated) may come before "version=".
            while (p < end && *p == ' ') ++p;
            if (p < end && *p == '\r') ++p;
            if (p == end || *p != '\n') return 0;
            ++p;
            continue;
        }
        const std::string_view rest(p, static_cast<size_t>(end - p));
        for (const char* v : {"version=1\n", "version=2\n", "version=3\n", "version=1\r\n", "version=2\r\n", "version=3\r\n"}) {
            if (rest.starts_with(v)) return 100;
        }
        return 0;
    }
    return 0;
}

// VirtualBox: the signature 0xbeda107f after the 64-byte text line of a 512-byte header.
int probe_vdi(std::span<const std::byte> buf, const std::string&) {
    return buf.size() >= 512 && load_le32(buf.data() + 64) == 0xbeda107fu ? 100 : 0;
}

int probe_vhdx(std::span<const std::byte> buf, const std::string&) {
    return starts_with(buf, 0, "vhdxfile") ? 100 : 0;
}

// Virtual PC / VHD: the footer copy at offset 0 of dynamic images. A fixed VHD only has the
// footer at its end, so qemu (and so this) takes it for raw.
int probe_vpc(std::span<const std::byte> buf, const std::string&) {
    return starts_with(buf, 0, "conectix") ? 100 : 0;
}

int probe_qed(std::span<const std::byte> buf, const std::string&) {
    return buf.size() >= 64 && starts_with(buf, 0, std::string_view("QED\0", 4)) ? 100 : 0;
}

// qcow version 1 (qcow2 is the same magic with version 2 or more).
int probe_qcow(std::span<const std::byte> buf, const std::string&) {
    return buf.size() >= 48 && load_be32(buf.data()) == 0x514649fbu && load_be32(buf.data() + 4) == 1 ? 100 : 0;
}

// LUKS version 1 (the only version qemu 7.2 reads).
int probe_luks(std::span<const std::byte> buf, const std::string&) {
    return starts_with(buf, 0, "LUKS\xba\xbe") && buf.size() >= 8 && load_be16(buf.data() + 6) == 1 ? 100 : 0;
}

int probe_parallels(std::span<const std::byte> buf, const std::string&) {
    if (buf.size() < 64) return 0;
    if (!starts_with(buf, 0, "WithoutFreeSpace") && !starts_with(buf, 0, "WithouFreSpacExt")) return 0;
    return load_le32(buf.data() + 16) == 2 ? 100 : 0;
}

// Bochs growing redolog, header versions 1 and 2.
int probe_bochs(std::span<const std::byte> buf, const std::string&) {
    if (buf.size() < 512) return 0;
    if (!c_string_is(buf, 0, "Bochs Virtual HD Image") || !c_string_is(buf, 32, "Redolog") ||
        !c_string_is(buf, 48, "Growing"))
        return 0;
    const uint32_t version = load_le32(buf.data() + 64);
    return version == 0x00020000u || version == 0x00010000u ? 100 : 0;
}

// cloop: the shell-script preamble of a V2.0 image; a weak score, like dmg's.
int probe_cloop(std::span<const std::byte> buf, const std::string&) {
    static constexpr std::string_view kMagic =
        "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
    return starts_with(buf, 0, kMagic.substr(0, std::min(kMagic.size(), buf.size()))) ? 2 : 0;
}

// dmg has no magic at the start of the file: qemu goes by the name alone.
int probe_dmg(std::span<const std::byte>, const std::string& filename) {
    return filename.size() > 4 && filename.ends_with(".dmg") ? 2 : 0;
}

struct ForeignFormat {
    std::string_view name;
    int (*probe)(std::span<const std::byte>, const std::string&);
};

// In the order qemu 7.2 tries them, which only matters for ties: cloop and dmg both score 2,
// and qemu-img takes a .dmg file that starts with the cloop preamble for dmg.
constexpr ForeignFormat kForeign[] = {
    {"vmdk", probe_vmdk},   {"vdi", probe_vdi},   {"vhdx", probe_vhdx},           {"vpc", probe_vpc},
    {"qed", probe_qed},     {"qcow", probe_qcow}, {"luks", probe_luks},           {"parallels", probe_parallels},
    {"bochs", probe_bochs}, {"dmg", probe_dmg},   {"cloop", probe_cloop},
};

}  // namespace

bool is_foreign_format(std::string_view name) {
    for (const ForeignFormat& f : kForeign)
        if (f.name == name) return true;
    return false;
}

std::string probe_head(const Registry& reg, std::span<const std::byte> head, const std::string& filename) {
    int best = 0;
    std::string name = "raw";
    for (const DriverSpec* d : reg.all()) {
        if (!d->probe) continue;
        const int score = d->probe(head, filename);
        if (score > best) {
            best = score;
            name = d->name;
        }
    }
    for (const ForeignFormat& f : kForeign) {
        if (reg.find(f.name)) continue;  // a driver of our own answers for it
        const int score = f.probe(head, filename);
        if (score > best) {
            best = score;
            name = f.name;
        }
    }
    return name;
}

}  // namespace blk
