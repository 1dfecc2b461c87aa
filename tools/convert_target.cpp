// convert's target safety: a new image is written under a hidden temporary name beside the
// target and renamed into place after the final flush; an existing target is overwritten in
// place, flagged incomplete until the copy is done; SIGINT/SIGTERM/SIGHUP cancel the copy.
#include "convert_target.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "blk/fd.h"
#include "common.h"

namespace blkimg {

namespace {

// --- Signal state. A handler can reach nothing but globals, so this is the one place with
// file-scope state; only one Interrupts object exists at a time. ---
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
constexpr size_t kMaxGuardedPaths = 4;
std::atomic<bool> g_interrupted{false};
volatile sig_atomic_t g_signal = 0;
char g_paths[kMaxGuardedPaths][PATH_MAX];
volatile sig_atomic_t g_path_count = 0;
struct sigaction g_old[3];
struct sigaction g_old_pipe;

void on_signal(int sig) {
    if (g_interrupted.exchange(true)) {
        // A second signal: the cooperative stop is taking too long. Only async-signal-safe
        // calls from here on.
        for (sig_atomic_t i = 0; i < g_path_count; ++i) ::unlink(g_paths[i]);
        // prog_name() was set before any handler was installed; reading it is safe here.
        static const char msg[] = ": interrupted again; stopped at once, the target was not written\n";
        const std::string& prog = prog_name();
        ssize_t r = ::write(STDERR_FILENO, prog.data(), prog.size());
        r = ::write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)r;
        ::_exit(1);
    }
    g_signal = sig;
}

// The limit of a file name component, minus room for ".NAME.blkimg-XXXXXX" decorations.
constexpr size_t kMaxTempBase = 200;

std::string dir_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The host path a target name means: "file:" dropped, symlinks followed (an existing target
// is replaced where its link points, as writing through the link would).
std::string host_path(const std::string& target) {
    std::string path = target.rfind("file:", 0) == 0 ? target.substr(5) : target;
    for (int hops = 0; hops < 16; ++hops) {
        struct stat st;
        if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
        char buf[PATH_MAX];
        ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
        if (n <= 0) break;
        std::string link(buf, static_cast<size_t>(n));
        path = link.front() == '/' ? link : dir_of(path) + "/" + link;
    }
    return path;
}

// Replaces every occurrence of `from` in `s` with `to`.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
        s.replace(pos, from.size(), to);
    }
    return s;
}

}  // namespace

Interrupts::Interrupts() {
    g_interrupted = false;
    g_signal = 0;
    g_path_count = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &sa, &g_old[i]);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &g_old_pipe);
}

Interrupts::~Interrupts() {
    g_path_count = 0;
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &g_old[i], nullptr);
    sigaction(SIGPIPE, &g_old_pipe, nullptr);
}

const std::atomic<bool>* Interrupts::flag() const { return &g_interrupted; }

bool Interrupts::raised() const { return g_interrupted.load(); }

std::string Interrupts::signal_name() const {
    switch (g_signal) {
        case SIGINT: return "SIGINT";
        case SIGTERM: return "SIGTERM";
        case SIGHUP: return "SIGHUP";
        default: return "a signal";
    }
}

void Interrupts::guard_paths(const std::vector<std::string>& paths) {
    g_path_count = 0;  // the handler ignores the table while it is rewritten
    sig_atomic_t n = 0;
    for (const std::string& p : paths) {
        if (n == static_cast<sig_atomic_t>(kMaxGuardedPaths) || p.size() >= PATH_MAX) continue;
        std::memcpy(g_paths[n], p.c_str(), p.size() + 1);
        ++n;
    }
    g_path_count = n;
}

NewTarget::NewTarget(NewTarget&& o) noexcept { *this = std::move(o); }

NewTarget& NewTarget::operator=(NewTarget&& o) noexcept {
    if (this != &o) {
        discard();
        target_ = std::move(o.target_);
        final_path_ = std::move(o.final_path_);
        write_path_ = std::move(o.write_path_);
        data_file_ = std::move(o.data_file_);
        direct_ = o.direct_;
        flag_ = o.flag_;
        replaces_ = o.replaces_;
        done_ = std::exchange(o.done_, true);
        lock_ = std::move(o.lock_);
        o.lock_.reset();
    }
    return *this;
}

NewTarget::~NewTarget() { discard(); }

blk::Result<NewTarget> NewTarget::prepare(const std::string& target, const std::string& data_file) {
    NewTarget t;
    t.target_ = target;
    t.final_path_ = host_path(target);
    if (t.final_path_.empty()) return blk::make_error(ENOENT, "Could not create '" + target + "': No such file or directory");
    struct stat st;
    mode_t mode = 0;
    if (::stat(t.final_path_.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return blk::make_error(EISDIR, "Could not create '" + target + "': Is a directory");
        if (!S_ISREG(st.st_mode)) {
            // A device (or a pipe): there is no name to swap in, so the image is written in place.
            t.direct_ = true;
            t.flag_ = S_ISBLK(st.st_mode);
            t.write_path_ = t.final_path_;
            return t;
        }
        // An existing file is overwritten in place, as qemu-img does: its inode, owner, mode,
        // extended attributes and hard links stay (an image owned by the hypervisor's user
        // stays readable by it). The create checks qemu's locks before emptying it, and the
        // image is born flagged incomplete until the copy has finished.
        t.direct_ = true;
        t.flag_ = true;
        t.write_path_ = t.final_path_;
        return t;
    } else {
        // A new file gets what the file protocol's create gives it: 0644 less the umask.
        mode_t mask = ::umask(0);
        ::umask(mask);
        mode = 0644 & ~mask;
    }

    std::string base = base_of(t.final_path_);
    if (base.size() > kMaxTempBase) base.resize(kMaxTempBase);
    // Beside the target, named the same way it is (a bare name stays bare), so names stored
    // relative to the image (backing files) resolve to the same paths in messages.
    const bool bare = t.final_path_.find('/') == std::string::npos;
    std::string tmpl = (bare ? std::string() : dir_of(t.final_path_) + "/") + "." + base + ".blkimg-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) return blk::errno_error(errno, "Could not create '" + target + "'");
    blk::Fd f(fd);
    t.write_path_ = tmpl;
    t.done_ = false;
    if (::fchmod(f.get(), mode) != 0) return blk::errno_error(errno, "Could not create '" + target + "'");
    BLK_TRY(f.close().context("Could not create '" + target + "'"));

    if (!data_file.empty() && !blk::is_json_filename(data_file)) {
        std::string path = data_file.rfind("file:", 0) == 0 ? data_file.substr(5) : data_file;
        struct stat ds;
        if (::stat(path.c_str(), &ds) != 0 && errno == ENOENT) t.data_file_ = path;
    }
    return t;
}

std::vector<std::string> NewTarget::cleanup_paths() const {
    std::vector<std::string> out;
    if (done_) return out;
    if (!direct_) out.push_back(write_path_);
    if (!data_file_.empty()) out.push_back(data_file_);
    return out;
}

std::string NewTarget::describe(const std::string& message) const {
    if (direct_ || write_path_.empty()) return message;
    return replace_all(message, write_path_, target_);
}

blk::Status NewTarget::commit(bool sync) {
    if (done_) return {};
    if (!direct_) {
        if (::rename(write_path_.c_str(), final_path_.c_str()) != 0) {
            return blk::errno_error(errno, "Could not rename the finished image onto '" + target_ + "'");
        }
        if (sync) {
            int dfd = ::open(dir_of(final_path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                blk::Fd d(dfd);
                if (::fsync(d.get()) != 0) return blk::errno_error(errno, "Could not flush the directory of '" + target_ + "'");
            }
        }
    }
    done_ = true;
    lock_.reset();
    return {};
}

void NewTarget::discard() {
    if (done_) return;
    if (!direct_) ::unlink(write_path_.c_str());
    if (!data_file_.empty()) ::unlink(data_file_.c_str());
    done_ = true;
    lock_.reset();
}

}  // namespace blkimg
