-- OCR progress (issue 22): how far the OCR of a file's current assembly has got, from the OCR
-- workers' OcrProgress events, so `sohoa status` shows a long file moving. Written by the
-- applier (consumers.apply.sql_files.OCR_PROGRESS) only for the revision the file is
-- assembled at, the latest progress of that revision winning; a status reads it while that
-- revision has no OCR result yet.
ALTER TABLE files
    ADD COLUMN IF NOT EXISTS ocr_pages_done integer,
    ADD COLUMN IF NOT EXISTS ocr_pages_total integer,
    ADD COLUMN IF NOT EXISTS ocr_progress_revision integer,
    ADD COLUMN IF NOT EXISTS ocr_progress_at timestamptz;
