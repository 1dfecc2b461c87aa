// Progress for long jobs: qemu-img's "(NN.NN/100%)" lines, a live terminal line with rate and
// ETA, qemu's SIGUSR1 status line, and a JSON-lines stream for scripts on a file descriptor.
#include "progress.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>

#include "blk/options.h"
#include "common.h"

namespace blkimg {

namespace {

// qemu-img copies in requests of up to 2 MiB and reports progress per request; counting done
// bytes in the same steps makes -p print the same lines as qemu-img on the same image.
constexpr uint64_t kQemuRequestBytes = 2u << 20;
// qemu prints a new percentage once it moved by more than this much.
constexpr float kQemuMinSkip = 1.0f;
// The live terminal line and the JSON stream are refreshed at most this often.
constexpr auto kRefresh = std::chrono::milliseconds(100);
// The rate shown is smoothed over samples at least this far apart.
constexpr double kRateSampleSeconds = 0.5;
constexpr double kRateSmoothing = 0.3;  // weight of the newest sample

// Set by the SIGUSR1 handler; a signal handler can reach nothing but a global.
volatile sig_atomic_t g_status_requested = 0;

void on_sigusr1(int) { g_status_requested = 1; }

std::string format_duration(double seconds) {
    if (!(seconds >= 0) || seconds > 99 * 3600.0) return "--:--:--";
    auto s = static_cast<uint64_t>(seconds + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600, (s / 60) % 60, s % 60);
    return buf;
}

// In MiB/s, the unit of -r (whose M means MiB): `-r 60M` reads about 60 MiB/s.
std::string format_rate(double bytes_per_second) {
    char buf[32];
    if (!(bytes_per_second > 0)) return "-- MiB/s";
    std::snprintf(buf, sizeof buf, "%.1f MiB/s", bytes_per_second / (1 << 20));
    return buf;
}

}  // namespace

Progress::Progress(ProgressConfig cfg) : cfg_(cfg), start_(Clock::now()) {}

double Progress::elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

void Progress::print_qemu_line(float percent) {
    std::printf("    (%3.2f/100%%)\r", static_cast<double>(percent));
    std::fflush(stdout);
}

void Progress::draw_terminal(bool final) {
    const auto now = Clock::now();
    const double pct = total_ ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : (final ? 100.0 : 0.0);
    std::string tail;
    if (final) {
        const double secs = elapsed();
        tail = format_rate(secs > 0 ? static_cast<double>(done_) / secs : 0) + "  " + format_duration(secs) + " elapsed";
    } else {
        const double dt = std::chrono::duration<double>(now - rate_time_).count();
        if (dt >= kRateSampleSeconds && done_ >= rate_done_) {
            const double sample = static_cast<double>(done_ - rate_done_) / dt;
            rate_ = rate_ > 0 ? rate_ + (sample - rate_) * kRateSmoothing : sample;
            rate_done_ = done_;
            rate_time_ = now;
        }
        // Before the first sample, the average so far: a rate from the first refresh on, not
        // "--" for half a second.
        double shown = rate_;
        if (shown <= 0 && done_ > 0) {
            const double secs = std::chrono::duration<double>(now - start_).count();
            if (secs > 0) shown = static_cast<double>(done_) / secs;
        }
        const double eta = shown > 0 && total_ >= done_ ? static_cast<double>(total_ - done_) / shown : -1;
        tail = format_rate(shown) + "  ETA " + format_duration(eta);
    }
    // \r returns to the start of the line, \033[K clears what a longer earlier line left.
    std::printf("\r    (%6.2f/100%%)  %s\033[K", pct, tail.c_str());
    std::fflush(stdout);
    last_draw_ = now;
    drawn_ = true;
}

void Progress::write_json(const std::string& line) {
    if (cfg_.json_fd < 0 || json_broken_) return;
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(cfg_.json_fd, line.data() + off, line.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // a slow reader misses one line
        if (n <= 0) {
            json_broken_ = true;
            if (!cfg_.quiet) {
                print_warning("progress stream (fd " + std::to_string(cfg_.json_fd) +
                              "): " + (n < 0 ? std::strerror(errno) : "short write") + "; no more progress lines");
            }
            return;
        }
        off += static_cast<size_t>(n);
    }
    json_started_ = true;
    last_json_ = Clock::now();
}

void Progress::begin() {
    std::lock_guard lock(mu_);
    start_ = Clock::now();
    rate_time_ = start_;
    current_ = 0;
    last_print_ = 0;
    if (!cfg_.show) return;
    if (cfg_.terminal) draw_terminal(false);
    else print_qemu_line(0);
}

void Progress::update(uint64_t done, uint64_t total) {
    std::lock_guard lock(mu_);
    done_ = done;
    total_ = total;
    if (total > 0) {
        const uint64_t counted = done >= total ? total : done / kQemuRequestBytes * kQemuRequestBytes;
        float current = static_cast<float>(100.0 * static_cast<double>(counted) / static_cast<double>(total));
        if (current > 100) current = 100;
        current_ = current;
        // qemu's rule, except that 0% is printed once, by begin(): qemu counts a request when it
        // starts, so it never reports 0% again, while steps below 2 MiB round down to 0 here.
        if (current > last_print_ + kQemuMinSkip || current < last_print_ - kQemuMinSkip || current == 100) {
            last_print_ = current;
            if (cfg_.show && !cfg_.terminal) print_qemu_line(current);
        }
    }
    if (g_status_requested && !cfg_.show) {
        g_status_requested = 0;
        std::fprintf(stderr, "    (%3.2f/100%%)\n", static_cast<double>(current_));
    }
    const auto now = Clock::now();
    if (cfg_.show && cfg_.terminal && now - last_draw_ >= kRefresh) draw_terminal(false);
    if (cfg_.json_fd >= 0 && (!json_started_ || now - last_json_ >= kRefresh)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "{\"done\": %" PRIu64 ", \"total\": %" PRIu64 ", \"elapsed\": %.3f}\n", done, total,
                      elapsed());
        write_json(buf);
    }
}

void Progress::end(ProgressEnd how, const std::string& error) {
    std::lock_guard lock(mu_);
    if (how == ProgressEnd::Ok) done_ = total_;
    if (cfg_.show) {
        if (cfg_.terminal) {
            if (how == ProgressEnd::Ok) draw_terminal(true);
            if (drawn_) std::printf("\n");
        } else {
            if (how == ProgressEnd::Ok) {
                current_ = 100;
                last_print_ = 100;
                print_qemu_line(100);
            }
            std::printf("\n");
        }
        std::fflush(stdout);
    }
    if (cfg_.json_fd >= 0) {
        const char* status = how == ProgressEnd::Ok ? "ok" : how == ProgressEnd::Interrupted ? "interrupted" : "failed";
        char buf[200];
        std::snprintf(buf, sizeof buf, "{\"done\": %" PRIu64 ", \"total\": %" PRIu64 ", \"elapsed\": %.3f, \"status\": \"%s\"",
                      done_, total_, elapsed(), status);
        std::string line = buf;
        if (how != ProgressEnd::Ok && !error.empty()) line += ", \"error\": " + blk::Json(error).dump(-1, ' ', false, blk::Json::error_handler_t::replace);
        line += "}\n";
        write_json(line);
    }
}

void Progress::clear_line() {
    std::lock_guard lock(mu_);
    if (!cfg_.show || !cfg_.terminal || !drawn_) return;
    std::printf("\r\033[K");
    std::fflush(stdout);
    drawn_ = false;
}

blk::Result<int> Progress::parse_fd(const std::string& text) {
    const std::string what = "Invalid progress file descriptor '" + text + "'";
    if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) {
        return blk::make_error(EINVAL, what + ": expected a descriptor number");
    }
    const int fd = std::stoi(text);
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return blk::errno_error(errno, what);
    if ((flags & O_ACCMODE) == O_RDONLY) return blk::make_error(EBADF, what + ": not open for writing");
    return fd;
}

void Progress::install_sigusr1() {
    struct sigaction sa {};
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
}

}  // namespace blkimg
