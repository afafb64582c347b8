/// Why a schedule could not be made, parsed or accepted, with a message for a person.
///
/// `Schedules` sits below the `Tensor` target and cannot use `TwoBPError`;
/// callers higher up wrap this one (its `description` is the whole story).
/// Validation errors carry the rank-by-step grid of the schedule in
/// `message`, with the faulty cells (or rows) marked, and the same cells in
/// `cells`/`rows` for tools that draw the grid themselves.
public struct ScheduleError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Reason: String, Sendable, Equatable {
        /// The parameters of a `ScheduleRequest` do not describe a schedule.
        case invalidRequest
        /// The text form could not be read.
        case parse
        /// The placement or an action refers to a stage, chunk or micro-batch that does not exist.
        case outOfRange
        /// Some (stage, kind, micro-batch) never runs.
        case missing
        /// Some (stage, kind, micro-batch) runs twice.
        case repeated
        /// An action comes before something it needs on its own rank.
        case dependency
        /// No rank can make progress although some have actions left.
        case deadlock
        /// A send or receive that does not fit the placement or is never matched.
        case communication
    }

    public let reason: Reason
    public let message: String
    /// The blamed cells of the rank-by-step grid.
    public let cells: [ScheduleCell]
    /// The blamed ranks when no single cell is at fault (something is missing).
    public let rows: [Int]

    public init(_ reason: Reason, _ message: String, cells: [ScheduleCell] = [], rows: [Int] = []) {
        self.reason = reason
        self.message = message
        self.cells = cells
        self.rows = rows
    }

    public var description: String { message }
}

/// One cell of the rank-by-step grid: `step` is the index in `actions[rank]`.
public struct ScheduleCell: Hashable, Sendable, CustomStringConvertible {
    public let rank: Int
    public let step: Int

    public init(rank: Int, step: Int) {
        self.rank = rank
        self.step = step
    }

    public var description: String { "rank \(rank), step \(step)" }
}
