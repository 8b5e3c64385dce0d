# fairseq's --user-dir loader imports every module in this folder.
