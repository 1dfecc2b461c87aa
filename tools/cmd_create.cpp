// blkimg create: make a new disk image (qemu-img create compatible).
#include <cstdio>
#include <optional>

#include "common.h"
#include "create_opts.h"

namespace blkimg {

namespace {

constexpr const char* kSizeSuffixHint =
    " You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";

}  // namespace

int cmd_create(int argc, char** argv) {
    CLI::App app("Create a new disk image FILENAME of SIZE bytes in format FMT (default raw). With a backing file "
                 "the new image records only the differences from it, and SIZE defaults to the backing file's.",
                 "blkimg create");
    std::string format = "raw";
    std::vector<std::string> option_args;
    std::optional<std::string> backing_file, backing_format;
    bool unsafe = false, quiet = false;
    std::vector<std::string> objects;
    std::string filename, size_text;
    app.add_option("-f,--format", format, "image format of the new image (default: raw)");
    app.add_option("-o,--options", option_args,
                   "format options, KEY=VALUE[,...]; repeatable; '-o help' lists the format's options")
        ->allow_extra_args(false);
    app.add_option_function<std::string>("-b,--backing", [&](const std::string& v) { backing_file = v; },
                                         "make the new image a copy-on-write overlay of BACKING_FILE "
                                         "(relative names are relative to the new image's directory)");
    app.add_option_function<std::string>("-F,-B,--backing-format", [&](const std::string& v) { backing_format = v; },
                                         "format of the backing file (required with -b; -B is qemu 10's spelling)");
    app.add_flag("-u,--backing-unsafe", unsafe, "do not open the backing file (its format and SIZE must be given)");
    app.add_flag("-q,--quiet", quiet, "do not print the 'Formatting ...' line");
    app.add_option("--object", objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->allow_extra_args(false);
    app.add_option("filename", filename, "the image file to create (an existing file is overwritten)");
    app.add_option("size", size_text, "virtual size in bytes, with an optional suffix k, M, G, T, P or E (powers of 1024)");
    app.allow_extras();
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (!app.remaining().empty()) {
        const std::string extra = app.remaining().front();
        print_error(extra.size() > 1 && extra[0] == '-' ? "unrecognized option '" + extra + "'" : "Unexpected argument: " + extra);
        return 1;
    }

    std::string options;
    for (const std::string& o : option_args) {
        if (auto st = accumulate_options(options, o); !st) {
            print_error(st.error().message);
            return 1;
        }
    }
    blk::ObjectStore store;
    for (const std::string& o : objects) {
        if (auto st = store.add(o); !st) {
            print_error(st.error().message);
            return 1;
        }
    }
    if (!options.empty() && has_help_option(options)) {
        return print_create_options_help(format, filename.empty() ? nullptr : &filename);
    }
    if (filename.empty()) {
        print_error("Expecting image file name (try 'blkimg create --help' for more information)");
        return 1;
    }

    blk::CreateRequest req;
    req.format = format;
    req.filename = filename;
    req.objects = &store;
    req.backing_file = backing_file;
    req.backing_format = backing_format;
    req.open_backing = !unsafe;
    if (!size_text.empty()) {
        // qemu-img's cvtnum: a size with suffixes, below 2^63.
        auto v = blk::parse_size(size_text);
        if (!v && v.error().code != ERANGE) {
            print_error(std::string("Invalid image size specified.") + kSizeSuffixHint);
            return 1;
        }
        if (!v || *v > static_cast<uint64_t>(INT64_MAX)) {
            print_error("Invalid image size specified. Must be between 0 and 9223372036854775807.");
            return 1;
        }
        req.size = *v;
    }
    if (!options.empty()) {
        auto parsed = blk::parse_create_options(options);
        if (!parsed) {
            print_error(filename + ": " + parsed.error().message);
            return 1;
        }
        req.options = std::move(*parsed);
    }
    if (!quiet) {
        req.on_ready = [&](const blk::CreateSummary& s) { print_formatting_line(filename, format, s); };
    }
    if (auto st = blk::create_image(req); !st) {
        print_error(filename + ": " + st.error().message);
        return 1;
    }
    return 0;
}

}  // namespace blkimg
