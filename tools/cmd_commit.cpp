// blkimg commit: write what an image holds into its backing file (qemu-img commit compatible).
#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include "blk/commit.h"
#include "common.h"
#include "convert_target.h"
#include "progress.h"

namespace blkimg {

int cmd_commit(int argc, char** argv) {
    CLI::App app("Commit the changes an image holds into its backing file (or, with -b, a deeper image of its "
                 "backing chain, committing the images in between too). Without -d the image is emptied "
                 "afterwards, so that it reads its backing file again.",
                 prog_name() + " commit");
    ImageArgs args;
    std::string cache = "writeback", base_name, rate;
    bool drop = false, progress = false, quiet = false;
    app.add_option("-f,--format", args.format, "image format (probed from the content when omitted)")->type_name("FMT");
    app.add_flag("--image-opts", args.image_opts, "treat FILENAME as dotted image options (driver=qcow2,file.filename=x)");
    app.add_option("--object", args.objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->type_name("OBJECTDEF");
    app.add_option("-t,--cache", cache, "cache mode of the images (default: writeback; none, off, directsync: O_DIRECT; "
                                        "unsafe: no flush)")
        ->type_name("CACHE");
    app.add_option("-b,--base", base_name, "commit into BASE, an image of the backing chain, as the backing file name "
                                           "stored in the image above it or resolved from there (implies -d)")
        ->type_name("BASE");
    app.add_flag("-d,--drop", drop, "leave the image as it is (do not empty it)");
    app.add_option("-r,--rate-limit", rate, "limit the copy to this many bytes per second (suffixes k, M, G, ...)")
        ->type_name("RATE");
    app.add_flag("-p,--progress", progress, "show progress");
    app.add_flag("-q,--quiet", quiet, "print nothing but errors");
    app.add_option("filename", args.filename, "image file, json:{...} or (with --image-opts) dotted options")
        ->type_name("FILENAME");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    uint64_t rate_limit = 0;
    if (!rate.empty() && !size_arg(rate, "rate limit", rate_limit)) return 1;
    if (!base_name.empty()) drop = true;  // the images between would no longer read right
    if (quiet) progress = false;
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (!valid_cache_mode(cache)) {
        print_error("Invalid cache option: " + cache);
        return 1;
    }
    args.cache_direct = cache_mode_direct(cache);
    args.cache_no_flush = cache == "unsafe";
    // qemu-img opens the image read-write whatever -d says; its backing files open read-only
    // and the job reopens the base read-write.
    args.writable = true;
    // As qemu-img commit (BDRV_O_UNMAP): discard defaults to unmap, so detect-zeroes=unmap
    // is accepted on the image options.
    args.discard_unmap = true;

    ProgressConfig pc;
    pc.show = progress;
    pc.terminal = pc.show && isatty(STDOUT_FILENO);
    pc.quiet = quiet;
    Progress prog(pc);
    auto g = open_image_args(args);
    if (!g) {
        print_error(g.error().message);
        return 1;
    }
    // As qemu-img: progress starts once the image is open, and a failure after that ends
    // its line first.
    if (pc.show) prog.begin();
    auto fail = [&](const std::string& msg) {
        if (pc.show) prog.end(ProgressEnd::Failed, msg);
        print_error(msg);
        return 1;
    };
    blk::CommitOptions o;
    o.top = g->root.get();
    o.drop = drop;
    o.rate_limit = rate_limit;
    if (!base_name.empty()) {
        o.base = blk::find_backing_image(*o.top, base_name);
        if (!o.base) return fail("Did not find '" + base_name + "' in the backing chain of '" + args.filename + "'");
    } else if (!blk::backing_chain_next(o.top)) {
        return fail("Image does not have a backing file");
    }
    Interrupts intr;
    o.cancel = intr.flag();
    if (pc.show) o.progress = [&](uint64_t done, uint64_t total) { prog.update(done, total); };
    auto r = blk::commit_image(*g, o);
    if (!r) {
        if (intr.raised()) {
            return fail("interrupted by " + intr.signal_name() + "; the image was left as it was, the base may hold part "
                        "of its data");
        }
        return fail(r.error().message);
    }
    if (pc.show) prog.end(ProgressEnd::Ok);
    if (!quiet) std::printf("Image committed.\n");
    return 0;
}

}  // namespace blkimg
