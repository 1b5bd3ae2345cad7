def cm_to_inches(cm):
    return cm / 2.54
