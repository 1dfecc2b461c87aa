// Shared CLI pieces: image-spec flags, opening, error printing and exit codes.
#pragma once

#include <functional>
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
    bool cache_no_flush = false;     // cache=unsafe: flushes do not reach the disk
    bool writable = false;           // open the image read-write (its backing files stay read-only)
    bool discard_unmap = false;      // every node's discard option defaults to unmap (qemu's BDRV_O_UNMAP)
    // Set: a backing file that cannot be opened is handed here and its overlay opens without
    // it (blk::OpenFlags::on_backing_error); unset, it fails the open.
    std::function<void(const blk::BackingError&)> on_backing_error{};
};

// Adds -f/--format, --image-opts, --object, -U/--force-share and the positional filename.
void add_image_flags(CLI::App& app, ImageArgs& args);

// After parse_cli: -1 if exactly one FILENAME was given, else qemu-img's usage error (1).
int check_one_filename(const CLI::App& app);

// qemu's cache modes (bdrv_parse_cache_mode): none, off, writeback, writethrough, directsync,
// unsafe.
bool valid_cache_mode(const std::string& mode);
// True for the modes that bypass the host's page cache (O_DIRECT): none, off, directsync.
bool cache_mode_direct(const std::string& mode);

// Adds --output=human|json.
void add_output_flag(CLI::App& app, std::string& output);
// False (after qemu-img's message) unless `output` is human or json.
bool check_output(const std::string& output);

// True if `e` is the file protocol's refusal of an image another process holds (qemu's locks).
bool is_lock_conflict(const blk::Error& e);

// Opens the image described by `args` read-only unless args.writable (with backing files unless told not to).
// Errors carry qemu-img's "Could not open 'NAME': " context, and a lock conflict the hint that
// -U skips the check (unless -U was given).
// no_io: metadata only (info, graph; an encrypted image needs no key); skip_data_file: with no_io, leave the data file an
// image names unopened (info, as qemu-img 7.2.x).
blk::Result<blk::Graph> open_image_args(const ImageArgs& args, bool open_backing = true, bool no_io = false,
                                        bool skip_data_file = false);


// The name messages start with: the last component of argv[0], as qemu-img and coreutils do,
// so that blkimg installed or linked as qemu-img prints "qemu-img: ..." like the original.
void set_prog_name(const char* argv0);
const std::string& prog_name();

// True if `root` is a raw image whose host file carries user.blkimg.incomplete: an
// interrupted convert (-n, or over an existing file) left it partly written.
bool raw_flagged_incomplete(blk::Node* root);

// Prints "PROG: MESSAGE" to stderr.
void print_error(const std::string& message);
// Prints "PROG: warning: MESSAGE" to stderr.
void print_warning(const std::string& message);
// A command-line mistake, in qemu-img's words: the message, then "Try 'PROG --help' for more
// information". Returns 1, the exit code.
int usage_error(const std::string& message);
// qemu-img's cvtnum errors for a bad size argument (`what` is "image size", "start offset",
// ...): the suffix hint on two lines as qemu prints it, or the range when out of range.
void print_size_error(const std::string& what, bool out_of_range);
// qemu-img's cvtnum: a size with suffixes below 2^63, else print_size_error() and false.
bool size_arg(const std::string& text, const std::string& what, uint64_t& out);

// Parses options the way qemu-img's getopt_long does (unique prefixes of long options,
// bundled short flags, "--", a value taken from the next word even if it starts with '-',
// empty values kept), reporting mistakes in qemu-img's words; then hands CLI11 the options
// and, after "--", the positional words. Positional words beyond what the app takes are left
// in app.remaining() for the command to judge. Returns -1 to continue, else the exit code.
int parse_cli(CLI::App& app, int argc, char** argv);
// The positional words the app did not take, in order.
std::vector<std::string> extra_words(const CLI::App& app);

}  // namespace blkimg
