//! Reading the M4-layout CSVs the forecasting examples take.

/// Series of an M4-layout CSV (`series,V1,V2,...`, ragged rows): each series' id and values.
pub(crate) fn read_series(path: &str) -> Result<Vec<(String, Vec<f64>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .skip(1)
        .map(|line| {
            let mut cells = line.split(',').map(|c| c.trim_matches('"'));
            let id = cells.next().unwrap_or_default().to_string();
            let values = cells
                .filter(|c| !c.is_empty() && *c != "NA")
                .map(|c| c.parse::<f64>().map_err(|e| format!("{id}: {c}: {e}")))
                .collect::<Result<_, _>>()?;
            Ok((id, values))
        })
        .collect()
}
