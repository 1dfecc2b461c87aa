// blkimg info: placeholder.
#include "common.h"
namespace blkimg {
int cmd_info(int argc, char** argv) {
    CLI::App app("Show facts about an image", "blkimg info");
    ImageArgs args;
    std::string output = "human";
    add_image_flags(app, args);
    add_output_flag(app, output);
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    auto g = open_image_args(args, false);
    if (!g) { print_error(g.error().message); return 1; }
    std::printf("image: %s\nfile format: %s\n", g->root->filename().c_str(), g->root->driver_name().c_str());
    return 0;
}
}  // namespace blkimg
