// The LUKS (version 1) header: what qemu-img info shows of an encrypted image without its key.
#pragma once

#include <cstdint>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

// Reads and checks the LUKS header at `offset` of `file` and returns its facts (qemu's
// QCryptoBlockInfo: cipher, mode, IV generator, hashes, payload offset, key slots).
// Nothing is decrypted; the key is not needed.
Result<EncryptFacts> luks_header_info(Node& file, uint64_t offset);

}  // namespace blk
