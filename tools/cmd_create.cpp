// blkimg create: make a new disk image (qemu-img create compatible).
#include <cstdio>
#include <optional>

#include "common.h"
#include "create_opts.h"

namespace blkimg {

int cmd_create(int argc, char** argv) {
    CLI::App app("Create a new disk image FILENAME of SIZE bytes in format FMT (default raw). With a backing file "
                 "the new image records only the differences from it, and SIZE defaults to the backing file's.",
                 prog_name() + " create");
    std::string format = "raw";
    std::vector<std::string> option_args;
    std::optional<std::string> backing_file, backing_format;
    bool unsafe = false, quiet = false;
    std::vector<std::string> objects;
    std::string filename, size_text;
    app.add_option("-f,--format", format, "image format of the new image (default: raw)")->type_name("FMT");
    app.add_option("-o,--options", option_args,
                   "format options, KEY=VALUE[,...]; repeatable; '-o help' lists the format's options")
        ->allow_extra_args(false)
        ->type_name("OPTIONS");
    app.add_option_function<std::string>("-b,--backing", [&](const std::string& v) { backing_file = v; },
                                         "make the new image a copy-on-write overlay of BACKING_FILE "
                                         "(relative names are relative to the new image's directory)")
        ->type_name("BACKING_FILE");
    app.add_option_function<std::string>("-F,-B,--backing-format", [&](const std::string& v) { backing_format = v; },
                                         "format of the backing file (required with -b; -B is qemu 10's spelling)")
        ->type_name("BACKING_FMT");
    app.add_flag("-u,--backing-unsafe", unsafe, "do not open the backing file (its format and SIZE must be given)");
    app.add_flag("-q,--quiet", quiet, "do not print the 'Formatting ...' line");
    app.add_option("--object", objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->allow_extra_args(false)
        ->type_name("OBJECTDEF");
    CLI::Option* filename_opt =
        app.add_option("filename", filename, "the image file to create (an existing file is overwritten)")->type_name("FILENAME");
    CLI::Option* size_opt =
        app.add_option("size", size_text, "virtual size in bytes, with an optional suffix k, M, G, T, P or E (powers of 1024)")
            ->type_name("SIZE");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;

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
    // qemu-img's order: the name, then the size, then anything left over.
    if (!filename_opt->count()) return usage_error("Expecting image file name");

    blk::CreateRequest req;
    req.format = format;
    req.filename = filename;
    req.objects = &store;
    req.backing_file = backing_file;
    req.backing_format = backing_format;
    req.open_backing = !unsafe;
    if (size_opt->count()) {
        uint64_t size = 0;
        if (!size_arg(size_text, "image size", size)) return 1;
        req.size = size;
    }
    if (auto extra = extra_words(app); !extra.empty()) return usage_error("Unexpected argument: " + extra.front());
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
