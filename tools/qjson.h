// Printing JSON exactly as qemu-img prints it: its pretty layout and its dictionary key order.
#pragma once

#include <string>

#include "blk/options.h"

namespace blkimg {

// qemu's pretty JSON: 4-space indentation, empty containers as "{\n}" / "[\n]",
// object keys in qemu's QDict order (insertion order in `j` breaks bucket ties).
std::string qemu_pretty_json(const blk::Json& j);

// qemu's human "Format specific information" dump of a dictionary at `indent` levels:
// "key with spaces: value" lines, nested containers indented by 4.
std::string qemu_human_dump(const blk::Json& dict, int indent);

// qemu's size_to_str(): "196 KiB", "1 GiB", "0 B" (three significant digits).
std::string size_to_str(uint64_t v);

}  // namespace blkimg
