// The LUKS (version 1) header, read for its description only (no key, nothing decrypted).
// Layout from the LUKS1 on-disk format specification: all numbers big-endian.
#include "luks_header.h"

#include <array>
#include <string>
#include <string_view>

#include "blk/endian.h"

namespace blk {

namespace {

constexpr size_t kHeaderBytes = 592;  // 208 bytes of fields, then 8 key slots of 48
constexpr size_t kSlots = 8;
constexpr uint32_t kSlotEnabled = 0x00ac71f3;
constexpr uint32_t kSlotDisabled = 0x0000dead;
constexpr uint64_t kSector = 512;

std::string c_field(const std::byte* p, size_t n) {
    size_t len = 0;
    while (len < n && p[len] != std::byte{0}) ++len;
    return std::string(reinterpret_cast<const char*>(p), len);
}

// qemu's name for a cipher and key length ("aes" + 32 bytes -> "aes-256"), or "".
std::string cipher_alg(const std::string& name, uint32_t key_bytes) {
    const std::string bits = std::to_string(key_bytes * 8);
    if (name == "aes" || name == "serpent" || name == "twofish") {
        if (key_bytes == 16 || key_bytes == 24 || key_bytes == 32) return name + "-" + bits;
        return {};
    }
    if (name == "cast5" && key_bytes == 16) return "cast5-128";
    if (name == "sm4" && key_bytes == 16) return "sm4";
    return {};
}

bool known_hash(std::string_view h) {
    return h == "md5" || h == "sha1" || h == "sha224" || h == "sha256" || h == "sha384" || h == "sha512" ||
           h == "ripemd160";
}

}  // namespace

Result<EncryptFacts> luks_header_info(Node& file, uint64_t offset) {
    auto bad = [](const std::string& why) { return make_error(EINVAL, why); };
    if (offset > file.size() || file.size() - offset < kHeaderBytes) {
        return bad("LUKS header at offset " + std::to_string(offset) + " lies past the end of the file");
    }
    std::array<std::byte, kHeaderBytes> h{};
    BLK_TRY(file.read(offset, h).context("Unable to read LUKS header"));
    const std::byte* b = h.data();
    static constexpr std::string_view kMagic("LUKS\xba\xbe", 6);
    if (std::string_view(reinterpret_cast<const char*>(b), 6) != kMagic) {
        return bad("Volume is not in LUKS format");
    }
    if (load_be16(b + 6) != 1) return bad("LUKS version " + std::to_string(load_be16(b + 6)) + " is not supported");
    const std::string cipher_name = c_field(b + 8, 32);
    const std::string mode_spec = c_field(b + 40, 32);
    const std::string hash = c_field(b + 72, 32);
    const uint32_t payload_sector = load_be32(b + 104);
    uint32_t key_bytes = load_be32(b + 108);
    const uint32_t mk_iters = load_be32(b + 164);
    const std::string uuid = c_field(b + 168, 40);

    // "xts-plain64", "cbc-essiv:sha256": the mode, then the IV generator and its hash.
    const auto dash = mode_spec.find('-');
    if (dash == std::string::npos) return bad("Unexpected cipher mode string format '" + mode_spec + "'");
    const std::string mode = mode_spec.substr(0, dash);
    std::string ivgen = mode_spec.substr(dash + 1);
    std::string ivgen_hash;
    if (auto colon = ivgen.find(':'); colon != std::string::npos) {
        ivgen_hash = ivgen.substr(colon + 1);
        ivgen = ivgen.substr(0, colon);
    }
    if (mode != "ecb" && mode != "cbc" && mode != "xts" && mode != "ctr") return bad("Unsupported cipher mode '" + mode + "'");
    if (ivgen != "plain" && ivgen != "plain64" && ivgen != "essiv") return bad("Unsupported IV generator '" + ivgen + "'");
    if (ivgen == "essiv" && !known_hash(ivgen_hash)) return bad("Unsupported ivgen hash '" + ivgen_hash + "'");
    if (!known_hash(hash)) return bad("Unsupported hash algorithm '" + hash + "'");
    // XTS keys are two keys of the cipher's length.
    if (mode == "xts") key_bytes /= 2;
    const std::string alg = cipher_alg(cipher_name, key_bytes);
    if (alg.empty()) return bad("Unsupported cipher '" + cipher_name + "' with key size " + std::to_string(key_bytes * 8));

    EncryptFacts info;
    for (size_t i = 0; i < kSlots; ++i) {
        const std::byte* s = b + 208 + 48 * i;
        const uint32_t state = load_be32(s);
        if (state != kSlotEnabled && state != kSlotDisabled) {
            return bad("Keyslot " + std::to_string(i) + " state (active/disable) is corrupted");
        }
        LuksSlotFacts slot;
        slot.active = state == kSlotEnabled;
        slot.key_offset = uint64_t{load_be32(s + 40)} * kSector;
        if (slot.active) {
            slot.iters = load_be32(s + 4);
            slot.stripes = load_be32(s + 44);
        }
        info.slots.push_back(slot);
    }

    info.format = "luks";
    info.cipher_alg = alg;
    info.cipher_mode = mode;
    info.ivgen_alg = ivgen;
    if (!ivgen_hash.empty()) info.ivgen_hash_alg = ivgen_hash;
    info.hash_alg = hash;
    info.payload_offset = uint64_t{payload_sector} * kSector;
    info.master_key_iters = mk_iters;
    info.uuid = uuid;
    return info;
}

}  // namespace blk
