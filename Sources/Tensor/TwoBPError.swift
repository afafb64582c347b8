/// The one error type of TwoBP: a human-readable message, never a trap.
///
/// User input (a model name, a data file, a schedule, a checkpoint) is checked
/// where it enters and reported through this type, so the CLI can print one
/// line and exit non-zero instead of crashing.
public struct TwoBPError: Error, CustomStringConvertible, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
