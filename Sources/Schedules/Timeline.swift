/// One action's interval on one rank, in seconds from the start of the step.
public struct TimelineEvent: Sendable, Equatable, Codable {
    public let rank: Int
    public let action: Action
    public let start: Double
    public let end: Double

    public init(rank: Int, action: Action, start: Double, end: Double) {
        self.rank = rank
        self.action = action
        self.start = start
        self.end = end
    }

    public var duration: Double { end - start }
}

/// What happened (measured by the runner) or would happen (predicted by the
/// simulator) in one step: the same type, so the two compare and render alike.
public struct Timeline: Sendable, Equatable, Codable {
    public let ranks: Int
    public var events: [TimelineEvent]
    /// Peak bytes per rank, when known.
    public var peakMemory: [Int]?

    public init(ranks: Int, events: [TimelineEvent], peakMemory: [Int]? = nil) {
        self.ranks = ranks
        self.events = events
        self.peakMemory = peakMemory
    }

    /// From the first start to the last end over all ranks.
    public var stepTime: Double {
        guard let first = events.map(\.start).min(), let last = events.map(\.end).max() else { return 0 }
        return last - first
    }

    /// The first start over all ranks: time zero when drawing, since a
    /// measured timeline starts wherever the clock happened to be.
    public var startTime: Double { events.map(\.start).min() ?? 0 }

    /// Time `rank` spent computing (communication actions excluded).
    public func busyTime(rank: Int) -> Double {
        events.filter { $0.rank == rank && !$0.action.kind.isCommunication }.reduce(0) { $0 + $1.duration }
    }

    /// Idle time over step time for `rank`.
    public func bubbleRatio(rank: Int) -> Double {
        let step = stepTime
        return step > 0 ? Swift.max(0, step - busyTime(rank: rank)) / step : 0
    }

    /// The bubble ratio averaged over ranks: the share of the pipeline's
    /// compute capacity the step left idle.
    public var meanBubbleRatio: Double {
        guard ranks > 0 else { return 0 }
        return (0..<ranks).reduce(0) { $0 + bubbleRatio(rank: $1) } / Double(ranks)
    }
}
