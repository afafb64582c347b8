import Foundation
import Synchronization

/// SIGINT and SIGTERM as users of training frameworks expect: the first asks the run to stop
/// after the step in progress (every rank agrees through the step's reduction, and the trainer
/// writes a checkpoint when the run has a folder); a second one exits at once.
public enum StopSignal {
    /// The first signal received, 0 for none. A static `Atomic` is plain memory once initialised,
    /// which `install` makes sure of before any handler can run.
    private static let received = Atomic<Int32>(0)

    /// The signal that asked the run to stop, if one has.
    public static var pending: Int32? {
        let signal = received.load(ordering: .relaxed)
        return signal == 0 ? nil : signal
    }

    /// Installs the handlers (the process's, so call it once, from the command that trains).
    public static func install() {
        _ = received.load(ordering: .relaxed)
        for number in [SIGINT, SIGTERM] {
            signal(number) { number in
                if StopSignal.received.exchange(number, ordering: .relaxed) != 0 { _exit(128 + number) }
                // Only async-signal-safe calls here: write(2) of a static string.
                let message: StaticString = "\ntwobp: stopping after this step (signal again to exit at once)\n"
                _ = write(2, message.utf8Start, message.utf8CodeUnitCount)
            }
        }
    }
}
