// blkimg map: placeholder.
#include "common.h"
namespace blkimg {
int cmd_map(int argc, char** argv) {
    CLI::App app("Show where an image's data lives", "blkimg map");
    ImageArgs args;
    std::string output = "human";
    add_image_flags(app, args);
    add_output_flag(app, output);
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    print_error("map: not implemented yet");
    return 1;
}
}  // namespace blkimg
