/// A timeline for the terminal: one row per rank, a fixed number of
/// characters per second, each action written as its text form (`F3`, `1I0`,
/// `W*`) padded with `-` to its length, idle time as `.`.
///
/// Transfers are left out: a text row has room for one thing at a time, and
/// the compute rows are what show the bubbles.
public enum TimelineText {
    /// The widest a row gets when the scale is chosen automatically.
    public static let defaultMaxColumns = 160

    /// - Parameter columnsPerSecond: the scale; by default the shortest action
    ///   gets room for the longest label, unless that makes a row wider than `maxColumns`.
    public static func render(_ timeline: Timeline, title: String, columnsPerSecond: Double? = nil,
                              maxColumns: Int = defaultMaxColumns) -> String {
        let compute = timeline.events.filter { !$0.action.kind.isCommunication }
        let step = timeline.stepTime
        let scale = columnsPerSecond ?? automaticScale(compute, step: step, maxColumns: maxColumns)
        let unit = RenderStyle.unit(for: step)
        let width = Int((step * scale).rounded())
        var rows = Array(repeating: Array(repeating: idle, count: width), count: timeline.ranks)
        let origin = timeline.startTime
        for event in compute {
            let first = Int(((event.start - origin) * scale).rounded())
            let last = min(width, max(first + 1, Int(((event.end - origin) * scale).rounded())))
            guard first < last else { continue }
            let text = label(of: event.action, columns: last - first)
            for (offset, character) in text.enumerated() { rows[event.rank][first + offset] = character }
        }
        let perColumn = scale > 0 ? RenderStyle.format(1 / scale, unit: unit) : "-"
        var lines = ["\(title) — step \(RenderStyle.format(step, unit: unit)) · bubble \(RenderStyle.percent(timeline.meanBubbleRatio)) · 1 column = \(perColumn)"]
        let rankWidth = String(max(0, timeline.ranks - 1)).count
        for rank in 0..<timeline.ranks {
            let name = String(rank).leftPadded(to: rankWidth)
            lines.append("rank \(name) |\(String(rows[rank]))| idle \(RenderStyle.percent(timeline.bubbleRatio(rank: rank)))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static let idle: Character = "."
    static let fill: Character = "-"

    /// The action's text form if it fits in `columns`, else its kind's first letter; padded with `-`.
    static func label(of action: Action, columns: Int) -> String {
        let full = action.description
        let text = full.count <= columns ? full : String(action.kind.rawValue.prefix(1))
        return String(text.prefix(columns)) + String(repeating: fill, count: max(0, columns - text.count))
    }

    private static func automaticScale(_ events: [TimelineEvent], step: Double, maxColumns: Int) -> Double {
        guard step > 0 else { return 1 }
        let shortest = events.map(\.duration).filter { $0 > 0 }.min() ?? step
        let widestLabel = events.map(\.action.description.count).max() ?? 1
        return min(Double(widestLabel) / shortest, Double(maxColumns) / step)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: " ", count: max(0, width - count)) + self
    }
}
