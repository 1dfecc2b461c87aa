// blkimg: the command-line entry point; dispatches to one file per subcommand.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "blk/driver.h"
#include "common.h"

namespace blkimg {
int cmd_check(int argc, char** argv);
int cmd_commit(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_create(int argc, char** argv);
int cmd_graph(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_map(int argc, char** argv);
}  // namespace blkimg

namespace {

struct Command {
    const char* name;
    int (*run)(int, char**);
    const char* summary;
};

constexpr Command kCommands[] = {
    {"check", blkimg::cmd_check, "check an image's metadata for errors and leaked clusters"},
    {"commit", blkimg::cmd_commit, "write an image's data into its backing file and empty the image"},
    {"compare", blkimg::cmd_compare, "check whether two images have the same content"},
    {"convert", blkimg::cmd_convert, "copy images into a new or existing image, converting the format"},
    {"create", blkimg::cmd_create, "create a new disk image (raw, qcow2), optionally over a backing file"},
    {"graph", blkimg::cmd_graph, "show the nodes and edges an image spec opens (human, json: that reopens it, dot)"},
    {"info", blkimg::cmd_info, "show facts about an image (format, sizes, backing chain)"},
    {"map", blkimg::cmd_map, "show where each range of an image's data lives"},
};

constexpr const char* kVersion = "0.1.0";
// The qemu-img release whose command line and output blkimg matches.
constexpr const char* kQemuVersion = "7.2.0";

void usage(FILE* out) {
    const char* prog = blkimg::prog_name().c_str();
    std::fprintf(out,
                 "%s: an offline disk-image toolkit, command-line compatible with qemu-img\n\n"
                 "usage: %s COMMAND [options]\n"
                 "       %s --help | --version | --list-commands | --list-drivers | --list-formats[=create]\n\n"
                 "  --list-formats           format drivers (=create: those that can create an image)\n"
                 "  --list-drivers           every driver: formats, protocols and filters\n\n"
                 "commands:\n",
                 prog, prog, prog);
    for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
    std::fprintf(out, "\nRun '%s COMMAND --help' for a command's options; 'man blkimg' for image specs.\n", prog);
}

void version() {
    // Tools that check qemu-img's version parse its first line: invoked as qemu-img, print
    // qemu-img's two lines, naming the compatible release.
    if (blkimg::prog_name() == "qemu-img") {
        std::printf("qemu-img version %s (blkimg %s)\n"
                    "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
                    kQemuVersion, kVersion);
        return;
    }
    std::printf("blkimg version %s\n", kVersion);
}

// Format drivers, or with `what` "create" only those that can create an image (completions
// offer these for create -f and convert -O).
int list_formats(const std::string& what) {
    if (!what.empty() && what != "create") {
        return blkimg::usage_error("--list-formats takes no value or 'create', not '" + what + "'");
    }
    for (const blk::DriverSpec* d : blk::Registry::builtin().all()) {
        // Protocols (file) can create too, but a format is what create -f and convert -O ask for.
        if (d->kind != blk::DriverKind::Format) continue;
        if (what == "create" && !d->can_create()) continue;
        std::printf("%s\n", d->name.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    blkimg::set_prog_name(argv[0]);
    // A write past the file size limit (ulimit -f) fails with EFBIG and is reported as an
    // error naming the file, as qemu-img does, instead of killing the process.
    std::signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) return blkimg::usage_error("Not enough arguments");
    std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        usage(stdout);
        return 0;
    }
    if (cmd == "-V" || cmd == "--version") {
        version();
        return 0;
    }
    if (cmd == "--list-drivers") {
        for (const blk::DriverSpec* d : blk::Registry::builtin().all()) std::printf("%s\n", d->name.c_str());
        return 0;
    }
    if (cmd == "--list-formats" || cmd.rfind("--list-formats=", 0) == 0) {
        return list_formats(cmd.size() > 15 ? cmd.substr(15) : "");
    }
    if (cmd == "--list-commands") {
        for (const Command& c : kCommands) std::printf("%s\n", c.name);
        return 0;
    }
    for (const Command& c : kCommands) {
        if (cmd == c.name) return c.run(argc - 1, argv + 1);
    }
    if (cmd.size() > 1 && cmd[0] == '-') return blkimg::usage_error("unrecognized option '" + cmd + "'");
    return blkimg::usage_error("Command not found: " + cmd);
}
