// qemu-img's -o handling shared by create and convert.
#include "create_opts.h"

#include <algorithm>
#include <cstdio>

#include "common.h"

namespace blkimg {

namespace {

const char* type_name(blk::OptType t) {
    switch (t) {
        case blk::OptType::Bool: return "bool (on/off)";
        case blk::OptType::Size: return "size";
        case blk::OptType::Int: return "num";
        default: return "str";
    }
}

}  // namespace

blk::Status accumulate_options(std::string& acc, const std::string& arg) {
    size_t trailing = 0;
    while (trailing < arg.size() && arg[arg.size() - 1 - trailing] == ',') ++trailing;
    if (arg.empty() || arg[0] == ',' || trailing % 2 != 0) return blk::make_error(EINVAL, "Invalid option list: " + arg);
    acc = acc.empty() ? arg : acc + "," + arg;
    return {};
}

bool has_help_option(const std::string& list) {
    auto opts = blk::parse_create_options(list);
    return opts && opts->contains("help") && (*opts)["help"].is_boolean();
}

int print_create_options_help(const std::string& fmt, const std::string* filename, const blk::Registry& reg) {
    const blk::DriverSpec* drv = reg.find(fmt);
    if (!drv || drv->kind == blk::DriverKind::Filter) {
        print_error("Unknown file format '" + fmt + "'");
        return 1;
    }
    if (!drv->can_create()) {
        print_error("Format driver '" + fmt + "' does not support image creation");
        return 1;
    }
    std::vector<const blk::OptSpec*> opts;
    for (const blk::OptSpec& o : drv->create_options) opts.push_back(&o);
    if (filename) {
        auto proto = blk::create_protocol(*filename, reg);
        if (!proto) {
            print_error(proto.error().message);
            return 1;
        }
        for (const blk::OptSpec& o : proto->first->create_options) {
            if (std::none_of(opts.begin(), opts.end(), [&](const blk::OptSpec* p) { return p->name == o.name; })) {
                opts.push_back(&o);
            }
        }
    }
    std::stable_sort(opts.begin(), opts.end(), [](const blk::OptSpec* a, const blk::OptSpec* b) { return a->name < b->name; });
    if (filename) std::printf("Supported options:\n");
    else std::printf("Supported %s options:\n", fmt.c_str());
    for (const blk::OptSpec* o : opts) {
        const std::string name = o->name + "=<" + type_name(o->type) + ">";
        std::printf("  %-22s - %s\n", name.c_str(), o->help.c_str());
    }
    if (!filename) {
        std::printf("\nThe protocol level may support further options.\n"
                    "Specify the target filename to include those options.\n");
    }
    return 0;
}

void print_formatting_line(const std::string& filename, const std::string& fmt, const blk::CreateSummary& summary) {
    std::string line = "Formatting '" + filename + "', fmt=" + fmt + " ";
    bool first = true;
    for (const auto& [key, value] : summary) {
        if (!first) line += ' ';
        first = false;
        line += key + "=" + value;
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

}  // namespace blkimg
