// blkimg: the command-line entry point; dispatches to one file per subcommand.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "blk/driver.h"
#include "common.h"

namespace blkimg {
int cmd_convert(int argc, char** argv);
int cmd_create(int argc, char** argv);
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
    {"convert", blkimg::cmd_convert, "copy images into a new or existing image, converting the format"},
    {"create", blkimg::cmd_create, "create a new disk image (raw, qcow2), optionally over a backing file"},
    {"info", blkimg::cmd_info, "show facts about an image (format, sizes, backing chain)"},
    {"map", blkimg::cmd_map, "show where each range of an image's data lives"},
};

void usage(FILE* out) {
    std::fprintf(out,
                 "blkimg: an offline disk-image toolkit, command-line compatible with qemu-img\n\n"
                 "usage: blkimg [--help|--version|--list-drivers] COMMAND [options]\n\n"
                 "commands:\n");
    for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
    std::fprintf(out, "\nRun 'blkimg COMMAND --help' for a command's options; 'man blkimg' for image specs.\n");
}

}  // namespace

int main(int argc, char** argv) {
    // A write past the file size limit (ulimit -f) fails with EFBIG and is reported as an
    // error naming the file, as qemu-img does, instead of killing the process.
    std::signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        blkimg::print_error("Not enough arguments (try 'blkimg --help')");
        return 1;
    }
    std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        usage(stdout);
        return 0;
    }
    if (cmd == "-V" || cmd == "--version") {
        std::printf("blkimg version 0.1.0\n");
        return 0;
    }
    if (cmd == "--list-drivers") {
        for (const blk::DriverSpec* d : blk::Registry::builtin().all()) std::printf("%s\n", d->name.c_str());
        return 0;
    }
    if (cmd == "--list-commands") {
        for (const Command& c : kCommands) std::printf("%s\n", c.name);
        return 0;
    }
    for (const Command& c : kCommands) {
        if (cmd == c.name) return c.run(argc - 1, argv + 1);
    }
    blkimg::print_error("Command not found: " + cmd + " (try 'blkimg --help')");
    return 1;
}
