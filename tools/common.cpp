// Shared CLI pieces: image-spec flags, opening, error printing and exit codes.
#include "common.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iostream>

namespace blkimg {

void add_image_flags(CLI::App& app, ImageArgs& args) {
    app.add_option("-f,--format", args.format, "image format (probed from the content when omitted)")->type_name("FMT");
    app.add_flag("--image-opts", args.image_opts, "treat FILENAME as dotted image options (driver=qcow2,file.filename=x)");
    app.add_option("--object", args.objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->type_name("OBJECTDEF");
    app.add_flag("-U,--force-share", args.force_share, "open the image shared, even if a VM is using it");
    // Not required here: a missing name gets qemu-img's message from check_one_filename().
    app.add_option("filename", args.filename, "image file, json:{...} or (with --image-opts) dotted options")
        ->type_name("FILENAME");
}

int check_one_filename(const CLI::App& app) {
    if (app.get_option("filename")->count() != 1 || !extra_words(app).empty()) {
        return usage_error("Expecting one image file name");
    }
    return -1;
}

bool valid_cache_mode(const std::string& mode) {
    return mode == "none" || mode == "off" || mode == "writeback" || mode == "writethrough" || mode == "directsync" ||
           mode == "unsafe";
}

bool cache_mode_direct(const std::string& mode) { return mode == "none" || mode == "off" || mode == "directsync"; }

void add_output_flag(CLI::App& app, std::string& output) {
    app.add_option("--output", output, "output format: human (default) or json")->type_name("FMT");
}

bool check_output(const std::string& output) {
    if (output == "human" || output == "json") return true;
    print_error("--output must be used with human or json as argument.");
    return false;
}

bool is_lock_conflict(const blk::Error& e) {
    return e.code == EAGAIN && e.message.find("is another process using the image [") != std::string::npos;
}

blk::Result<blk::Graph> open_image_args(const ImageArgs& args, bool open_backing, bool no_io, bool skip_data_file) {
    const std::string label = "Could not open '" + args.filename + "'";
    if (args.image_opts && !args.format.empty()) {
        return blk::make_error(EINVAL, "--image-opts and --format are mutually exclusive");
    }
    blk::ObjectStore objects;
    for (const std::string& o : args.objects) BLK_TRY(objects.add(o));
    blk::OpenFlags flags;
    flags.read_only = !args.writable;
    flags.force_share = args.force_share;
    flags.open_backing = open_backing;
    flags.no_io = no_io;
    flags.skip_data_file = skip_data_file;
    flags.cache_direct = args.cache_direct;
    flags.cache_no_flush = args.cache_no_flush;
    flags.discard_unmap = args.discard_unmap;
    flags.on_backing_error = args.on_backing_error;
    auto g = blk::open_image(blk::ImageSpec{args.filename, args.format, args.image_opts}, flags, &objects);
    if (!g) {
        blk::Error e = std::move(g).error();
        // Avoid "Could not open 'x': Could not open 'x': ..." when the file layer said it already.
        if (e.message.rfind(label, 0) != 0) e = std::move(e).with_context(label);
        // Every image opened here is read-only, where -U skips the lock check: say so, unless
        // -U was given (then the conflict is somewhere -U does not reach).
        if (!args.force_share && !args.writable && is_lock_conflict(e)) e.message += " (-U skips the check)";
        return e;
    }
    if (raw_flagged_incomplete(g->root.get())) {
        // Raw has no header to refuse it by: reading it without a word would pass a
        // half-copied disk off as a whole one.
        print_warning("'" + args.filename +
                      "' is flagged incomplete (user.blkimg.incomplete): an interrupted convert left it partly written");
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


namespace {

std::string& prog_name_storage() {
    static std::string name = "blkimg";
    return name;
}

// The option a long name (without "--") names: an exact match, else the only option it is a
// prefix of (getopt_long's abbreviations; an ambiguous prefix names none).
const CLI::Option* find_long(const CLI::App& app, const std::string& name) {
    const CLI::Option* found = nullptr;
    int prefixes = 0;
    for (const CLI::Option* o : app.get_options()) {
        bool prefix = false;
        for (const std::string& l : o->get_lnames()) {
            if (l == name) return o;
            if (!name.empty() && l.compare(0, name.size(), name) == 0) prefix = true;
        }
        if (prefix) {
            found = o;
            ++prefixes;
        }
    }
    return prefixes == 1 ? found : nullptr;
}

const CLI::Option* find_short(const CLI::App& app, char c) {
    for (const CLI::Option* o : app.get_options()) {
        for (const std::string& s : o->get_snames()) {
            if (s.size() == 1 && s[0] == c) return o;
        }
    }
    return nullptr;
}

bool takes_value(const CLI::Option* o) { return o->get_expected_max() > 0; }

// The option with its value in a form CLI11 cannot misread: "--name=VALUE" (a value starting
// with '-' stays a value), or "--name" and "" for an empty one (CLI11 takes "--name=" as no value
// and would take the next word instead).
void push_option(std::vector<std::string>& out, const CLI::Option* o, const std::string* value) {
    const std::string name = o->get_lnames().empty() ? "-" + o->get_snames().front() : "--" + o->get_lnames().front();
    if (!value) {
        out.push_back(name);
    } else if (value->empty()) {
        out.push_back(name);
        out.emplace_back();
    } else if (o->get_lnames().empty()) {
        out.push_back(name + *value);  // -Xvalue
    } else {
        out.push_back(name + "=" + *value);
    }
}

}  // namespace

void set_prog_name(const char* argv0) {
    if (!argv0 || !*argv0) return;
    std::string name = argv0;
    if (auto slash = name.rfind('/'); slash != std::string::npos) name.erase(0, slash + 1);
    if (!name.empty()) prog_name_storage() = name;
}

const std::string& prog_name() { return prog_name_storage(); }

void print_error(const std::string& message) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", prog_name().c_str(), message.c_str());
}

void print_warning(const std::string& message) { print_error("warning: " + message); }

int usage_error(const std::string& message) {
    print_error(message);
    std::fprintf(stderr, "Try '%s --help' for more information\n", prog_name().c_str());
    return 1;
}

void print_size_error(const std::string& what, bool out_of_range) {
    if (out_of_range) {
        print_error("Invalid " + what + " specified. Must be between 0 and 9223372036854775807.");
        return;
    }
    // qemu breaks this message over two lines, each with the program's name.
    print_error("Invalid " + what + " specified. You may use k, M, G, T, P or E suffixes for");
    print_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

bool size_arg(const std::string& text, const std::string& what, uint64_t& out) {
    auto v = blk::parse_size(text);
    if (!v || *v > static_cast<uint64_t>(INT64_MAX)) {
        print_size_error(what, v || v.error().code == ERANGE);
        return false;
    }
    out = *v;
    return true;
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
    // Positional words beyond what the app takes are the command's to report (qemu-img's
    // "Expecting one image file name", "Unexpected argument: X").
    app.allow_extras();
    // As with getopt, the last of a repeated option counts (lists such as -o and --object
    // collect every value).
    for (CLI::Option* o : app.get_options()) {
        if (o->nonpositional() && o->get_items_expected_max() <= 1) o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
    std::vector<std::string> options, words;
    bool words_only = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (words_only || arg.size() < 2 || arg[0] != '-') {
            words.push_back(arg);
        } else if (arg == "--") {
            words_only = true;
        } else if (arg[1] == '-') {
            const size_t eq = arg.find('=');
            const CLI::Option* o = find_long(app, arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2));
            if (!o || (eq != std::string::npos && !takes_value(o))) return usage_error("unrecognized option '" + arg + "'");
            if (!takes_value(o)) {
                push_option(options, o, nullptr);
                continue;
            }
            std::string value;
            if (eq != std::string::npos) value = arg.substr(eq + 1);
            else if (i + 1 < argc) value = argv[++i];
            else return usage_error("missing argument for option '" + arg + "'");
            push_option(options, o, &value);
        } else {
            // Bundled short options (-Uq, -fqcow2): a value takes the rest of the word or the next.
            for (size_t k = 1; k < arg.size(); ++k) {
                const CLI::Option* o = find_short(app, arg[k]);
                if (!o) return usage_error("unrecognized option '" + arg + "'");
                if (!takes_value(o)) {
                    push_option(options, o, nullptr);
                    continue;
                }
                std::string value;
                if (k + 1 < arg.size()) value = arg.substr(k + 1);
                else if (i + 1 < argc) value = argv[++i];
                else return usage_error("missing argument for option '" + arg + "'");
                push_option(options, o, &value);
                break;
            }
        }
    }
    std::vector<std::string> args = std::move(options);
    args.emplace_back("--");
    args.insert(args.end(), words.begin(), words.end());
    std::reverse(args.begin(), args.end());  // CLI11 takes the words last to first
    try {
        app.parse(args);
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

std::vector<std::string> extra_words(const CLI::App& app) {
    std::vector<std::string> extra = app.remaining();
    // CLI11 keeps the "--" parse_cli puts before the positional words.
    if (!extra.empty() && extra.front() == "--") extra.erase(extra.begin());
    return extra;
}

}  // namespace blkimg
