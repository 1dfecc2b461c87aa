// qemu-img's -o handling shared by create and convert: joining -o arguments, -o help, and
// create's "Formatting ..." line.
#pragma once

#include <string>

#include "blk/driver.h"

namespace blkimg {

// Appends one -o argument to `acc` as qemu-img does (joined with ','). An empty argument, a
// leading ',' or an odd number of trailing ','s is "Invalid option list: ARG".
blk::Status accumulate_options(std::string& acc, const std::string& arg);

// True if the option list asks for help: an item that is just "help" or "?".
bool has_help_option(const std::string& list);

// Prints qemu-img's -o help for format `fmt` to stdout: "Supported FMT options:" and the
// format's create options sorted by name, then the note about protocol options; with a
// `filename`, "Supported options:" and the protocol's options merged in. Returns the exit
// code: 0, or 1 (error printed) for an unknown format or protocol.
int print_create_options_help(const std::string& fmt, const std::string* filename,
                              const blk::Registry& reg = blk::Registry::builtin());

// Prints "Formatting 'NAME', fmt=FMT key=value ..." to stdout, as qemu-img create does.
void print_formatting_line(const std::string& filename, const std::string& fmt, const blk::CreateSummary& summary);

}  // namespace blkimg
