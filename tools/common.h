// Shared CLI pieces: image-spec flags, opening, error printing and exit codes.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "blk/driver.h"

namespace blkimg {

// Flags every image-reading command shares with qemu-img.
struct ImageArgs {
    std::string filename;
    std::string format;              // -f
    bool image_opts = false;         // --image-opts
    std::vector<std::string> objects;  // --object
    bool force_share = false;        // -U
    bool cache_direct = false;       // a cache mode with O_DIRECT (-T none)
};

// Adds -f/--format, --image-opts, --object, -U/--force-share and the positional filename.
void add_image_flags(CLI::App& app, ImageArgs& args);

// Adds --output=human|json.
void add_output_flag(CLI::App& app, std::string& output);

// Opens the image described by `args` read-only (with backing files unless told not to).
// Errors carry qemu-img's "Could not open 'NAME': " context.
// `no_io`: metadata only, as qemu-img info opens (an encrypted image needs no key).
blk::Result<blk::Graph> open_image_args(const ImageArgs& args, bool open_backing = true, bool no_io = false);

// Prints "blkimg: MESSAGE" to stderr.
void print_error(const std::string& message);

// True if `root` is a raw image whose host file carries user.blkimg.incomplete: an
// interrupted convert (-n, or over an existing file) left it partly written.
bool raw_flagged_incomplete(blk::Node* root);

// Runs a CLI11 app parse; returns -1 to continue, else the exit code to return.
int parse_cli(CLI::App& app, int argc, char** argv);

}  // namespace blkimg
