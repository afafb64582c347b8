import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reports training progress on standard output.
///
/// On a terminal (isatty) it redraws one live line in place (`\r`, clear to end
/// of line): step, loss, throughput (tokens or samples per second), ETA. Otherwise (a pipe, a log file, CI) it
/// prints one plain line per reported step, every `plainEvery` steps and on the
/// last. `message(_:)` prints a line of its own without garbling the live line.
///
/// ETA = remaining steps × the mean time per step since this reporter's first
/// report, so resuming at step 500 of 1000 does not count steps 0..<500.
public final class ProgressReporter {
    public let totalSteps: Int
    public let interactive: Bool
    public let plainEvery: Int
    private let output: (String) -> Void
    private let clock: () -> Double
    private var start: (time: Double, step: Int)?
    private var liveLineShown = false

    /// - Parameters:
    ///   - totalSteps: the step count the ETA counts towards.
    ///   - interactive: live line or plain lines; defaults to whether stdout is a terminal.
    ///   - plainEvery: in plain mode, report every this many steps.
    ///   - output: where text goes (default: stdout, flushed); for tests.
    ///   - clock: seconds from a monotonic clock; for tests.
    public init(totalSteps: Int, interactive: Bool = isatty(STDOUT_FILENO) != 0, plainEvery: Int = 1,
                output: @escaping (String) -> Void = ProgressReporter.standardOutput,
                clock: @escaping () -> Double = ProgressReporter.monotonicSeconds) {
        self.totalSteps = totalSteps
        self.interactive = interactive
        self.plainEvery = Swift.max(plainEvery, 1)
        self.output = output
        self.clock = clock
    }

    /// Writes through `print`'s buffer and flushes, so reports and the caller's
    /// own `print` lines come out in order.
    public static func standardOutput(_ text: String) {
        print(text, terminator: "")
        fflush(stdout)
    }

    public static func monotonicSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Reports that optimizer step `step` (1-based count of steps done) finished.
    /// `unit` abbreviates what `throughput` counts per second (`tok`, `samples`).
    public func update(step: Int, loss: Double, throughput: Double, unit: String = "tok", learningRate: Double? = nil) {
        let now = clock()
        var eta: Double?
        if let start {
            if step > start.step {
                eta = (now - start.time) / Double(step - start.step) * Double(Swift.max(totalSteps - step, 0))
            }
        } else {
            // The first report anchors the ETA: later ones measure from it.
            start = (time: now, step: step)
        }
        let text = line(step: step, loss: loss, throughput: throughput, unit: unit, learningRate: learningRate, eta: eta)
        let last = step >= totalSteps
        if interactive {
            output("\r" + text + "\u{1B}[K" + (last ? "\n" : ""))
            liveLineShown = !last
        } else if last || step % plainEvery == 0 {
            output(text + "\n")
        }
    }

    /// Prints `text` on a line of its own (for validation results, checkpoints saved).
    public func message(_ text: String) {
        if interactive && liveLineShown {
            output("\r\u{1B}[K" + text + "\n")
            liveLineShown = false
        } else {
            output(text + "\n")
        }
    }

    /// Ends the live line, if one is shown.
    public func finish() {
        if interactive && liveLineShown {
            output("\n")
            liveLineShown = false
        }
    }

    func line(step: Int, loss: Double, throughput: Double, unit: String, learningRate: Double?, eta: Double?) -> String {
        let width = String(totalSteps).count
        var parts = ["step \(String(repeating: " ", count: Swift.max(0, width - String(step).count)))\(step)/\(totalSteps)",
                     "loss \(String(format: "%.4f", loss))"]
        if let learningRate { parts.append("lr \(String(format: "%.2e", learningRate))") }
        parts.append("\(String(format: "%.0f", throughput)) \(unit)/s")
        parts.append("ETA \(eta.map(ProgressReporter.formatDuration) ?? "--:--")")
        return parts.joined(separator: " | ")
    }

    /// `m:ss` or `h:mm:ss`.
    public static func formatDuration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "--:--" }
        let total = Int(seconds.rounded())
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return h > 0 ? "\(h):\(two(m)):\(two(s))" : "\(m):\(two(s))"
    }
}
