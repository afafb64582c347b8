/// The rank-by-step grid: one row per rank, one column per position in the
/// rank's action list, as PyTorch's pipelining validator prints it.
///
/// ```
///           0    1    2    3
///   rank 0  F0   F1  >B0<  B1
/// > rank 1  F0   B0   F1
/// ```
/// A marked cell is drawn `>B0<`; a marked row (something missing on that
/// rank) gets `>` before its label. Steps are positions, not times: two
/// cells in one column need not run at the same moment.
extension Schedule {
    public func grid(marking cells: Set<ScheduleCell> = [], markingRows rows: Set<Int> = []) -> String {
        let texts = actions.map { $0.map(\.description) }
        let longestAction = texts.joined().map(\.count).max() ?? 1
        /// Room for the action, its two markers and a space between columns.
        let cellWidth = max(longestAction, String(max(0, (actions.map(\.count).max() ?? 1) - 1)).count) + 3
        let labels = (0..<actions.count).map { "rank \($0)" }
        let labelWidth = (labels.map(\.count).max() ?? 0) + 2

        func pad(_ text: String, _ width: Int) -> String {
            text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
        }

        let columns = actions.map(\.count).max() ?? 0
        var lines = [pad("", labelWidth) + " " + (0..<columns).map { pad(" \($0)", cellWidth) }.joined()]
        for (rank, rankTexts) in texts.enumerated() {
            let label = (rows.contains(rank) ? "> " : "  ") + labels[rank]
            let row = rankTexts.enumerated().map { step, text in
                pad(cells.contains(ScheduleCell(rank: rank, step: step)) ? ">\(text)<" : " \(text) ", cellWidth)
            }.joined()
            lines.append(pad(label, labelWidth) + " " + row)
        }
        return lines.map { String($0.reversed().drop(while: { $0 == " " }).reversed()) }.joined(separator: "\n")
    }
}
