/// Why a cost model could not be read, a schedule could not be simulated, or
/// no automatic schedule fits: one human-readable message.
///
/// `Schedules` sits below `Tensor` and cannot use `TwoBPError`; the CLI prints
/// `description` the same way.
public struct SimulationError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
