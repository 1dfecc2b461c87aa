// Shared CLI pieces: image-spec flags, opening, error printing and exit codes.
#include "common.h"

#include <cstdio>
#include <iostream>

namespace blkimg {

void add_image_flags(CLI::App& app, ImageArgs& args) {
    app.add_option("-f,--format", args.format, "image format (probed from the content when omitted)");
    app.add_flag("--image-opts", args.image_opts, "treat FILENAME as dotted image options (driver=qcow2,file.filename=x)");
    app.add_option("--object", args.objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw");
    app.add_flag("-U,--force-share", args.force_share, "open the image shared, even if a VM is using it");
    app.add_option("filename", args.filename, "image file, json:{...} or (with --image-opts) dotted options")->required();
}

void add_output_flag(CLI::App& app, std::string& output) {
    app.add_option("--output", output, "output format")->check(CLI::IsMember({"human", "json"}));
}

blk::Result<blk::Graph> open_image_args(const ImageArgs& args, bool open_backing, bool no_io) {
    const std::string label = "Could not open '" + args.filename + "'";
    if (args.image_opts && !args.format.empty()) {
        return blk::make_error(EINVAL, "--image-opts and --format are mutually exclusive");
    }
    blk::ObjectStore objects;
    for (const std::string& o : args.objects) BLK_TRY(objects.add(o));
    blk::OpenFlags flags;
    flags.read_only = true;
    flags.force_share = args.force_share;
    flags.open_backing = open_backing;
    flags.no_io = no_io;
    blk::ImageSpec spec{args.filename, args.format, args.image_opts};
    auto g = [&]() -> blk::Result<blk::Graph> {
        BLK_TRY_ASSIGN(blk::Json opts, blk::image_spec_options(spec));
        // Children and backing files inherit it; options the image names itself win.
        if (args.cache_direct && opts.is_object()) {
            if (!opts.contains("cache")) opts["cache"] = blk::Json::object();
            blk::Json& cache = opts["cache"];
            if (cache.is_object() && !cache.contains("direct")) cache["direct"] = "on";
        }
        blk::OpenContext ctx(blk::Registry::builtin(), flags, &objects);
        BLK_TRY_ASSIGN(std::shared_ptr<blk::Node> root, ctx.open(opts));
        return blk::Graph{std::move(root)};
    }();
    if (!g) {
        // Avoid "Could not open 'x': Could not open 'x': ..." when the file layer said it already.
        const std::string& msg = g.error().message;
        if (msg.rfind(label, 0) == 0) return std::move(g).error();
        return std::move(g).error().with_context(label);
    }
    if (raw_flagged_incomplete(g->root.get())) {
        // Raw has no header to refuse it by: reading it without a word would pass a
        // half-copied disk off as a whole one.
        std::fflush(stdout);
        std::fprintf(stderr, "blkimg: warning: '%s' is flagged incomplete (user.blkimg.incomplete): an interrupted convert left it partly written\n",
                     args.filename.c_str());
    }
    return g;
}

bool raw_flagged_incomplete(blk::Node* root) {
    // raw without offset/size is a filter over its file (it passes the question down).
    if (!root || root->driver_name() != "raw") return false;
    if (root->incomplete()) return true;
    blk::Node* file = blk::primary_child(*root);
    return file && file->incomplete();
}

void print_error(const std::string& message) {
    std::fflush(stdout);
    std::fprintf(stderr, "blkimg: %s\n", message.c_str());
}

namespace {

// `--object help` and `--object TYPE,help` print what qemu-img prints and end the command
// (qemu-img acts on them while reading its options, before it wants a filename).
bool object_help(const std::string& def) {
    const bool all = def == "help" || def == "?";
    const auto comma = def.find(',');
    const std::string rest = comma == std::string::npos ? "" : def.substr(comma + 1);
    if (!all && rest != "help" && rest != "?") return false;
    const std::string type = all ? "" : def.substr(0, comma);
    if (type == "secret") {
        std::printf("secret options:\n  data=<string>\n  file=<string>\n  format=<QCryptoSecretFormat>\n"
                    "  iv=<string>\n  keyid=<string>\n");
    } else if (type == "throttle-group") {
        std::printf("throttle-group options:\n  limits=<ThrottleLimits>\n");
        for (const char* what : {"bps", "iops"}) {
            for (const char* dir : {"read", "total", "write"}) {
                std::printf("  x-%s-%s-max-length=<int>\n  x-%s-%s-max=<int>\n  x-%s-%s=<int>\n", what, dir, what,
                            dir, what, dir);
                if (std::string(what) == "iops" && std::string(dir) == "read") std::printf("  x-iops-size=<int>\n");
            }
        }
    } else {
        std::printf("List of user creatable objects:\n");
        for (const char* t : {"authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper", "secret",
                              "secret_keyring", "thread-context", "throttle-group", "tls-cipher-suites",
                              "tls-creds-anon", "tls-creds-psk", "tls-creds-x509"})
            std::printf("  %s\n", t);
    }
    return true;
}

}  // namespace

int parse_cli(CLI::App& app, int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--") break;
        if (a == "--object" && i + 1 < argc && object_help(argv[i + 1])) return 0;
        if (a.rfind("--object=", 0) == 0 && object_help(a.substr(9))) return 0;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(e.what());
        return 1;
    }
    return -1;
}

}  // namespace blkimg
