"""Small data files written to each loader's documented format (BLUE TSV, BLUE's ChemProt, GAD folds, SciBERT
ChemProt jsonl, FPB csv/txt, FinTextSen csv, raw HoC, local hf: files), all hand-written, none copied
from ../shared/data.

They live here as text, not as tracked data files: `conftest.fixtures_dir` writes them into a
session temp folder, so the repository tracks no train/dev/test data file.
"""

from __future__ import annotations

# relative path -> (content, encoding)
FORMAT_FIXTURES: dict[str, tuple[str, str]] = {
    # BLUE's ChemProt (bert_data/ChemProt/*.tsv): entities anonymised, the false class kept
    'blue_chemprot/dev.tsv': (
        'index\tsentence\tlabel\n'
        '10047461.T1.T2\t@CHEMICAL$ activates @GENE$ in vitro .\tCPR:3\n'
        '10047461.T3.T2\t@CHEMICAL$ was given before @GENE$ was measured .\tfalse\n'
        , 'utf-8'),
    'blue_chemprot/test.tsv': (
        'index\tsentence\tlabel\n'
        '10064839.T1.T5\t@CHEMICAL$ is a substrate of @GENE$ .\tCPR:9\n'
        '10064839.T2.T5\t@CHEMICAL$ , unlike @GENE$ , was stable .\tfalse\n'
        '10064839.T3.T6\t@CHEMICAL$ blocks @GENE$ .\tCPR:6\n'
        , 'utf-8'),
    'blue_chemprot/train.tsv': (
        'index\tsentence\tlabel\n'
        '10022817.T1.T4\t@CHEMICAL$ upregulates @GENE$ expression .\tCPR:3\n'
        '10022817.T2.T4\t@CHEMICAL$ inhibits @GENE$ activity .\tCPR:4\n'
        '10022817.T3.T5\t@CHEMICAL$ is an agonist of @GENE$ .\tCPR:5\n'
        '10022817.T3.T6\t@CHEMICAL$ antagonises @GENE$ .\tCPR:6\n'
        '10022817.T1.T6\t@GENE$ converts @CHEMICAL$ into its metabolite .\tCPR:9\n'
        '10022817.T2.T5\t@CHEMICAL$ and @GENE$ were both studied .\tfalse\n'
        '10022817.T2.T6\tNeither @CHEMICAL$ nor @GENE$ changed .\tfalse\n'
        , 'utf-8'),
    'blue_ddi/dev.tsv': (
        'index\tsentence\tlabel\n'
        'DDI-dev.s0\t@DRUG$ potentiates @DRUG$ .\tDDI-effect\n'
        'DDI-dev.s1\t@DRUG$ , @DRUG$ .\tDDI-false\n'
        , 'utf-8'),
    'blue_ddi/test.tsv': (
        'index\tsentence\tlabel\n'
        'DDI-test.s0\tAvoid @DRUG$ with @DRUG$ .\tDDI-advise\n'
        'DDI-test.s1\t@DRUG$ then @DRUG$ .\tDDI-false\n'
        , 'utf-8'),
    'blue_ddi/train.tsv': (
        'index\tsentence\tlabel\n'
        'DDI-train.s0\t@DRUG$ should not be combined with @DRUG$ .\tDDI-advise\n'
        'DDI-train.s1\t@DRUG$ increases the sedative effect of @DRUG$ .\tDDI-effect\n'
        'DDI-train.s2\t@DRUG$ interacts with @DRUG$ .\tDDI-int\n'
        'DDI-train.s3\t@DRUG$ raises plasma levels of @DRUG$ .\tDDI-mechanism\n'
        'DDI-train.s4\t@DRUG$ and @DRUG$ were both given .\tDDI-false\n'
        'DDI-train.s5\tPatients received @DRUG$ or @DRUG$ .\tDDI-false\n'
        , 'utf-8'),
    'blue_hoc/dev.tsv': (
        'labels\tsentence\tindex\n'
        'resisting cell death,tumor promoting inflammation\tInflammation blocks apoptosis .\t2001_1\n'
        '\tMethods are described .\t2001_2\n'
        , 'utf-8'),
    'blue_hoc/test.tsv': (
        'labels\tsentence\tindex\n'
        'inducing angiogenesis\tNew vessels form around the tumour .\t3001_1\n'
        , 'utf-8'),
    'blue_hoc/train.tsv': (
        'labels\tsentence\tindex\n'
        '0_0,1_0,2_0,3_0,4_0,5_0,6_0,7_0,8_1,9_0\tGrowth factor receptors drive proliferation .\t1001_1\n'
        '0_0,1_0,2_0,3_0,4_0,5_0,6_0,7_1,8_1,9_0\tApoptosis is evaded while proliferation rises .\t1001_2\n'
        '0_0,1_0,2_0,3_0,4_0,5_0,6_0,7_0,8_0,9_0\tWe studied 40 patients .\t1002_1\n'
        '0_1,1_0,2_0,3_0,4_0,5_0,6_0,7_0,8_0,9_0\tCells invade the surrounding tissue .\t1002_2\n'
        , 'utf-8'),
    'blue_hoc_noheader/test.tsv': (
        '0_0,1_0,2_0,3_0,4_0,5_1,6_0,7_0,8_0,9_1\tDNA damage fuels inflammation .\t4001_s0\n'
        '0_0,1_0,2_0,3_0,4_0,5_0,6_0,7_0,8_0,9_0\tWe enrolled mice .\t4001_s1\n'
        , 'utf-8'),
    'blue_i2b2/dev.tsv': (
        'dev.0\t@TREATMENT$ was given for @PROBLEM$ .\tTrAP\n'
        'dev.1\t@TEST$ revealed @PROBLEM$ .\tTeRP\n'
        'dev.2\t@PROBLEM$ secondary to @PROBLEM$ .\tPIP\n'
        'dev.3\t@TREATMENT$ and @PROBLEM$ noted .\tfalse\n'
        , 'utf-8'),
    'blue_i2b2/test.tsv': (
        'test.0\t@TREATMENT$ was given for @PROBLEM$ .\tTrAP\n'
        'test.1\t@TEST$ revealed @PROBLEM$ .\tTeRP\n'
        'test.2\t@PROBLEM$ secondary to @PROBLEM$ .\tPIP\n'
        'test.3\t@TREATMENT$ and @PROBLEM$ noted .\tfalse\n'
        , 'utf-8'),
    'blue_i2b2/train.tsv': (
        'train.0\t@TREATMENT$ was given for @PROBLEM$ .\tTrAP\n'
        'train.1\t@TEST$ revealed @PROBLEM$ .\tTeRP\n'
        'train.2\t@PROBLEM$ secondary to @PROBLEM$ .\tPIP\n'
        'train.3\t@TREATMENT$ and @PROBLEM$ noted .\tfalse\n'
        , 'utf-8'),
    'chemprot_jsonl/dev.jsonl': (
        '{"text": "<< chemical0 >> acts on [[ protein0 ]] .", "label": "UPREGULATOR", "metadata": []}\n'
        '{"text": "<< chemical1 >> acts on [[ protein1 ]] .", "label": "SUBSTRATE_PRODUCT-OF", "metadata": []}\n'
        , 'utf-8'),
    'chemprot_jsonl/test.jsonl': (
        '{"text": "<< chemical0 >> acts on [[ protein0 ]] .", "label": "DOWNREGULATOR", "metadata": []}\n'
        '{"text": "<< chemical1 >> acts on [[ protein1 ]] .", "label": "AGONIST-ACTIVATOR", "metadata": []}\n'
        '{"text": "<< chemical2 >> acts on [[ protein2 ]] .", "label": "INDIRECT-UPREGULATOR", "metadata": []}\n'
        , 'utf-8'),
    'chemprot_jsonl/train.jsonl': (
        '{"text": "<< chemical0 >> acts on [[ protein0 ]] .", "label": "INHIBITOR", "metadata": []}\n'
        '{"text": "<< chemical1 >> acts on [[ protein1 ]] .", "label": "ACTIVATOR", "metadata": []}\n'
        '{"text": "<< chemical2 >> acts on [[ protein2 ]] .", "label": "AGONIST", "metadata": []}\n'
        '{"text": "<< chemical3 >> acts on [[ protein3 ]] .", "label": "ANTAGONIST", "metadata": []}\n'
        '{"text": "<< chemical4 >> acts on [[ protein4 ]] .", "label": "SUBSTRATE", "metadata": []}\n'
        '{"text": "<< chemical5 >> acts on [[ protein5 ]] .", "label": "INDIRECT-DOWNREGULATOR", "metadata": []}\n'
        '{"text": "<< chemical6 >> acts on [[ protein6 ]] .", "label": "PRODUCT-OF", "metadata": []}\n'
        '{"text": "<< chemical7 >> acts on [[ protein7 ]] .", "label": "AGONIST-INHIBITOR", "metadata": []}\n'
        , 'utf-8'),
    'fpb/all-data.csv': (
        'result,content\n'
        'neutral,"The company , based in Espoo , reported item 0 ."\n'
        'positive,"Operating profit rose to EUR 0 mn from EUR 1 mn ."\n'
        'negative,"Net sales fell by 0 % in Sodankylä ."\n'
        'neutral,"The company , based in Espoo , reported item 1 ."\n'
        'neutral,"The company , based in Espoo , reported item 2 ."\n'
        'positive,"Operating profit rose to EUR 1 mn from EUR 1 mn ."\n'
        'negative,"Net sales fell by 1 % in Sodankylä ."\n'
        'neutral,"The company , based in Espoo , reported item 3 ."\n'
        'neutral,"The company , based in Espoo , reported item 4 ."\n'
        'positive,"Operating profit rose to EUR 2 mn from EUR 1 mn ."\n'
        'negative,"Net sales fell by 2 % in Sodankylä ."\n'
        'neutral,"The company , based in Espoo , reported item 5 ."\n'
        'neutral,"The company , based in Espoo , reported item 6 ."\n'
        'positive,"Operating profit rose to EUR 3 mn from EUR 1 mn ."\n'
        'negative,"Net sales fell by 3 % in Sodankylä ."\n'
        'neutral,"The company , based in Espoo , reported item 7 ."\n'
        'neutral,"The company , based in Espoo , reported item 8 ."\n'
        'positive,"Operating profit rose to EUR 4 mn from EUR 1 mn ."\n'
        'neutral,"The company , based in Espoo , reported item 9 ."\n'
        'positive,"Operating profit rose to EUR 5 mn from EUR 1 mn ."\n'
        , 'latin-1'),
    'fpb_txt/Sentences_AllAgree.txt': (
        'The company , based in Espoo , reported item 0 .@neutral\n'
        'Operating profit rose to EUR 0 mn from EUR 1 mn .@positive\n'
        'Net sales fell by 0 % in Sodankylä .@negative\n'
        'The company , based in Espoo , reported item 1 .@neutral\n'
        'The company , based in Espoo , reported item 2 .@neutral\n'
        'Operating profit rose to EUR 1 mn from EUR 1 mn .@positive\n'
        'Net sales fell by 1 % in Sodankylä .@negative\n'
        'The company , based in Espoo , reported item 3 .@neutral\n'
        'The company , based in Espoo , reported item 4 .@neutral\n'
        'Operating profit rose to EUR 2 mn from EUR 1 mn .@positive\n'
        'Net sales fell by 2 % in Sodankylä .@negative\n'
        'The company , based in Espoo , reported item 5 .@neutral\n'
        'The company , based in Espoo , reported item 6 .@neutral\n'
        'Operating profit rose to EUR 3 mn from EUR 1 mn .@positive\n'
        'Net sales fell by 3 % in Sodankylä .@negative\n'
        'The company , based in Espoo , reported item 7 .@neutral\n'
        'The company , based in Espoo , reported item 8 .@neutral\n'
        'Operating profit rose to EUR 4 mn from EUR 1 mn .@positive\n'
        'The company , based in Espoo , reported item 9 .@neutral\n'
        'Operating profit rose to EUR 5 mn from EUR 1 mn .@positive\n'
        , 'latin-1'),
    'fts/fts.csv': (
        'positive,"$AAPL tweet 0 positive"\n'
        'positive,"$AAPL tweet 1 positive"\n'
        'positive,"$AAPL tweet 2 positive"\n'
        'positive,"$AAPL tweet 3 positive"\n'
        'positive,"$AAPL tweet 4 positive"\n'
        'positive,"$AAPL tweet 5 positive"\n'
        'positive,"$AAPL tweet 6 positive"\n'
        'positive,"$AAPL tweet 7 positive"\n'
        'positive,"$AAPL tweet 8 positive"\n'
        'positive,"$AAPL tweet 9 positive"\n'
        'neutral,"$AAPL tweet 10 neutral"\n'
        'neutral,"$AAPL tweet 11 neutral"\n'
        'neutral,"$AAPL tweet 12 neutral"\n'
        'neutral,"$AAPL tweet 13 neutral"\n'
        'neutral,"$AAPL tweet 14 neutral"\n'
        'neutral,"$AAPL tweet 15 neutral"\n'
        'neutral,"$AAPL tweet 16 neutral"\n'
        'neutral,"$AAPL tweet 17 neutral"\n'
        'neutral,"$AAPL tweet 18 neutral"\n'
        'neutral,"$AAPL tweet 19 neutral"\n'
        'negative,"$AAPL tweet 20 negative"\n'
        'negative,"$AAPL tweet 21 negative"\n'
        'negative,"$AAPL tweet 22 negative"\n'
        'negative,"$AAPL tweet 23 negative"\n'
        'negative,"$AAPL tweet 24 negative"\n'
        'negative,"$AAPL tweet 25 negative"\n'
        'negative,"$AAPL tweet 26 negative"\n'
        'negative,"$AAPL tweet 27 negative"\n'
        'negative,"$AAPL tweet 28 negative"\n'
        'negative,"$AAPL tweet 29 negative"\n'
        , 'utf-8'),
    'gad/1/test.tsv': (
        'index\tsentence\tlabel\n'
        '0\t@GENE$ polymorphism increases @DISEASE$ risk .\t1\n'
        '1\t@GENE$ was not associated with @DISEASE$ .\t0\n'
        , 'utf-8'),
    'gad/1/train.tsv': (
        '@GENE$ variant 0 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 1 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 2 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 3 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 4 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 5 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 6 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 7 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 8 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 9 is associated with @DISEASE$ .\t1\n'
        '@GENE$ variant 0 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 1 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 2 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 3 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 4 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 5 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 6 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 7 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 8 shows no link to @DISEASE$ .\t0\n'
        '@GENE$ variant 9 shows no link to @DISEASE$ .\t0\n'
        , 'utf-8'),
    'hf_local/test.jsonl': (
        '{"sentence": "Sales dropped .", "label": "negative"}\n'
        , 'utf-8'),
    'hf_local/train.csv': (
        'sentence,label\n'
        '"Shares rose , analysts said .",positive\n'
        'Results were flat .,neutral\n'
        'Losses widened .,negative\n'
        , 'utf-8'),
    'hf_local/validation.csv': (
        'sentence,label\n'
        'Profit doubled .,positive\n'
        , 'utf-8'),
    'hoc_raw/labels/111.txt': (
        '<Sustaining proliferative signaling--Receptors AND Sustaining proliferative signaling--Growth factors< \n'
        , 'utf-8'),
    'hoc_raw/labels/222.txt': (
        '<Resisting cell death--Apoptosis ANDTumor promoting inflammation--Inflammation< NULL<Enabling replicative immortality--Immortalization\n'
        , 'utf-8'),
    'hoc_raw/labels/333.txt': (
        '<Inducing angiogenesis--Angiogenic factors\n'
        , 'utf-8'),
    'hoc_raw/text/111.txt': (
        'Sentence one about receptors .\n'
        'Sentence two .\n'
        , 'utf-8'),
    'hoc_raw/text/222.txt': (
        'Apoptosis and inflammation .\n'
        'Nothing here .\n'
        'Immortal cells .\n'
        , 'utf-8'),
    'hoc_raw/text/333.txt': (
        'Angiogenesis drives growth .\n'
        , 'utf-8'),
}
